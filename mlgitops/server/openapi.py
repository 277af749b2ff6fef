"""The OpenAPI 3 document of a server, built from the model's signature.

Column values are typed as the signature types them (``double`` -> number, ``long`` ->
64-bit integer, ...), the model name is the only value the ``{name}`` path parameter takes
(others answer 404), the serving commit the only value of ``{version}`` (a prefix of at least
7 characters works too; others answer 404), and every documented error has the body
``{"error": "<sentence>"}``. The binary tensor data extension is documented as the
``application/octet-stream`` body of infer (its JSON header's length in
``Inference-Header-Content-Length``). The relay route of the controller's gRPC gateway
(``POST /v2/grpc/…``, protobuf in and out) is internal and not documented here.
"""

from __future__ import annotations

from typing import Any

from mlgitops.server import schema, v2_protocol

_F32 = 3.4028234663852886e38
_ERROR = {"$ref": "#/components/schemas/Error"}


def _value_schema(kind: str) -> dict[str, Any]:
    if kind == "double":
        return {"type": "number"}
    if kind == "float":
        return {"type": "number", "minimum": -_F32, "maximum": _F32}
    if kind == "long":
        return {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
    if kind == "integer":
        return {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
    if kind == "boolean":
        return {"type": "boolean"}
    return {"type": "string"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "The body is not parseable or not shaped like the protocol.",
        401: "The route needs the API token (Authorization: Bearer).",
        404: "No such model.",
        405: "Method not allowed.",
        413: "The body exceeds the server's limit.",
        415: "Unsupported content type.",
        422: "The rows do not fit the model's signature, or the model could not score them.",
        503: "The server is shutting down.",
    }
    return {
        str(c): {"description": text[c], "content": {"application/json": {"schema": _ERROR}}}
        for c in codes
    }


def _json_ok(schema_: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema_}}}
    }


def document(
    *, name: str, version: str, sig: schema.Signature, output_datatype: str
) -> dict[str, Any]:
    """The OpenAPI 3.0 document for a server of model ``name``."""
    cols = sig.columns
    props = {
        c.name: {**_value_schema(c.type), **({"nullable": True} if c.name in sig.nullable else {})}
        for c in cols
    }
    required = [c.name for c in cols if c.required]
    record = {
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }
    records = {"type": "array", "minItems": 1, "items": record}
    any_value: dict[str, Any]
    kinds = sorted({c.type for c in cols})
    any_value = (
        _value_schema(kinds[0]) if len(kinds) == 1 else {"anyOf": [_value_schema(k) for k in kinds]}
    )
    width = len(cols)
    row = {"type": "array", "minItems": width, "maxItems": width, "items": any_value}
    rows = {"type": "array", "minItems": 1, "items": row}
    columnar = {
        "type": "object",
        "properties": {
            c.name: {
                "anyOf": [
                    {"type": "array", "minItems": 1, "items": _value_schema(c.type)},
                    _value_schema(c.type),
                ]
            }
            for c in cols
        },
        "required": required,
        "additionalProperties": False,
        "description": "One list per column, all of the same length (a scalar is one row).",
    }
    split = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "columns": {
                "type": "array",
                "nullable": True,
                "items": {"type": "string", "enum": list(sig.names)},
                "minItems": width,
                "maxItems": width,
                "uniqueItems": True,
            },
            "data": rows,
            "index": {"type": "array", "nullable": True},
        },
        "additionalProperties": False,
    }
    params = {"type": "object", "nullable": True, "description": "Accepted and ignored."}

    def one_key(key: str, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": [key],
            "properties": {key: value, "params": params},
            "additionalProperties": False,
        }

    invocation = {
        "oneOf": [
            one_key("dataframe_split", split),
            one_key("dataframe_records", records),
            one_key("instances", {"anyOf": [records, rows, columnar]}),
            one_key("inputs", {"anyOf": [records, rows, columnar]}),
        ]
    }
    datatypes = sorted(
        set(v2_protocol.V2_FOR_TYPE.values())
        | {"FP16", "INT8", "INT16", "UINT8", "UINT16", "UINT32", "UINT64"}
    )
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "description": "With the binary tensor data extension, 'data' is replaced by "
        "parameters.binary_data_size (the tensor's bytes follow the JSON header).",
        "properties": {
            "name": {
                "type": "string",
                "description": "A column name, or any name for one 2-D tensor.",
            },
            "shape": {
                "type": "array",
                "minItems": 1,
                "maxItems": 8,
                "items": {"type": "integer", "minimum": 0, "maximum": 2**31},
            },
            "datatype": {"type": "string", "enum": datatypes},
            "data": {"type": "array"},
            "parameters": {
                "type": "object",
                "description": "binary_data_size (binary extension); content_type 'pd', 'np' "
                "or 'str' (MLServer's codecs).",
            },
        },
        "additionalProperties": False,
    }
    infer_request = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string", "nullable": True},
            "model_name": {"type": "string", "enum": [name], "nullable": True},
            "model_version": {"type": "string", "enum": [version], "nullable": True},
            "parameters": {
                "type": "object",
                "nullable": True,
                "description": "binary_data_output: true answers with the binary extension; "
                "content_type 'pd' (one tensor per column), 'np' or 'str'.",
            },
            "inputs": {"type": "array", "minItems": 1, "items": tensor},
            "outputs": {
                "type": "array",
                "nullable": True,
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "enum": ["predict"]},
                        "parameters": {"type": "object"},
                    },
                },
            },
        },
        "additionalProperties": False,
    }
    out_tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "array", "description": "Absent when the output is binary."},
            "parameters": {"type": "object", "description": "binary_data_size when binary."},
        },
    }
    infer_response = {
        "type": "object",
        "required": ["model_name", "model_version", "id", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": out_tensor},
        },
    }
    meta_tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    }
    model_meta = {
        "type": "object",
        "required": ["name", "versions", "platform", "inputs", "outputs", "version"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": meta_tensor},
            "outputs": {"type": "array", "items": meta_tensor},
            "version": {"type": "string", "description": "The commit being served."},
            "digest": {"type": "string"},
        },
    }
    name_param = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [name]},
        "description": "The model's name (the only one this server serves).",
    }
    obj = {"type": "object"}
    version_param = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [version]},
        "description": "The serving commit (or a prefix of at least 7 characters); another "
        "version answers 404 naming the one that serves.",
    }
    header_length = {
        "name": "Inference-Header-Content-Length",
        "in": "header",
        "required": False,
        "schema": {"type": "integer", "minimum": 1},
        "description": "Binary tensor data extension: the byte length of the JSON header at "
        "the start of the body; the tensors' raw bytes follow it.",
    }
    infer_op = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": infer_request},
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                },
            },
        },
        "responses": {
            "200": {
                "description": "The predictions; binary (octet-stream, the JSON header's length "
                "in Inference-Header-Content-Length) when the request asks for it.",
                "content": {
                    "application/json": {"schema": infer_response},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            **_errors(400, 404, 413, 415, 422, 503),
        },
    }

    def versioned(operation: dict[str, Any], op_id: str) -> dict[str, Any]:
        params = [*operation.get("parameters", [name_param]), version_param]
        return {**operation, "operationId": op_id, "parameters": params}

    metadata_op = {
        "summary": "Model metadata (version = the served commit)",
        "operationId": "v2_model_metadata",
        "parameters": [name_param],
        "responses": {**_json_ok(model_meta), **_errors(404)},
    }
    ready_op = {
        "summary": "Model readiness",
        "operationId": "v2_model_ready",
        "parameters": [name_param],
        "responses": {**_json_ok(obj), **_errors(404, 503)},
    }
    stats_op = {
        "summary": "Live statistics of every worker and their samples (for monitors; "
        "Authorization: Bearer <MLGITOPS_API_TOKEN> when set; never through the gateway)",
        "operationId": "v2_model_stats",
        "parameters": [name_param],
        "responses": {**_json_ok(obj), **_errors(401, 404)},
    }
    infer_post = {
        "summary": "Open Inference Protocol v2: infer (JSON or binary tensors)",
        "operationId": "v2_infer",
        "parameters": [name_param, header_length],
        **infer_op,
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"mlgitops inference server for {name}",
            "version": version,
            "description": f"Serves model {name!r} at version {version}. Output datatype {output_datatype}.",
        },
        "paths": {
            "/v2/models/{name}/infer": {"post": infer_post},
            "/v2/models/{name}": {"get": metadata_op},
            "/v2/models/{name}/ready": {"get": ready_op},
            "/v2/models/{name}/stats": {"get": stats_op},
            "/v2/models/{name}/versions/{version}/infer": {
                "post": versioned(infer_post, "v2_versioned_infer")
            },
            "/v2/models/{name}/versions/{version}": {
                "get": versioned(metadata_op, "v2_versioned_model_metadata")
            },
            "/v2/models/{name}/versions/{version}/ready": {
                "get": versioned(ready_op, "v2_versioned_model_ready")
            },
            "/v2/models/{name}/versions/{version}/stats": {
                "get": versioned(stats_op, "v2_versioned_model_stats")
            },
            "/v2/health/live": {"get": {"operationId": "v2_live", "responses": _json_ok(obj)}},
            "/v2/health/ready": {
                "get": {"operationId": "v2_ready", "responses": {**_json_ok(obj), **_errors(503)}}
            },
            "/v2": {"get": {"operationId": "v2_server_metadata", "responses": _json_ok(obj)}},
            "/invocations": {
                "post": {
                    "summary": "MLflow scoring protocol",
                    "operationId": "invocations",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": invocation},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        **_json_ok(
                            {
                                "type": "object",
                                "required": ["predictions"],
                                "properties": {"predictions": {"type": "array"}},
                            }
                        ),
                        **_errors(400, 413, 415, 422, 503),
                    },
                }
            },
            "/ping": {"get": {"operationId": "ping", "responses": _json_ok(obj)}},
            "/health": {"get": {"operationId": "health", "responses": _json_ok(obj)}},
            "/version": {"get": {"operationId": "version", "responses": _json_ok(obj)}},
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {"get": {"operationId": "openapi", "responses": _json_ok(obj)}},
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                }
            }
        },
    }
