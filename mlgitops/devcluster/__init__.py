"""A throw-away local Kubernetes for tests and ``mlgitops demo --kubernetes``.

`cluster.TestCluster` runs etcd + kube-apiserver + kube-controller-manager from binaries built by
tools/k8s/build.sh; `kubelet.Kubelet` plays the kubelet (and binding) with real local processes;
`crds.install_crds` installs mlgitops' CustomResourceDefinitions. The real thing: `image.build`
makes the mlgitops OCI image without an engine, `node.RealNode` runs it on a real kubelet with
containerd (`host` undoes what the node does to the host).
"""
