"""Test support (no tests here): what several test files share.

- ``waits``: ``wait_until`` (poll a condition; a time-out names what was awaited)
- ``data``: the reference population and estimators (``FEATURES``, ``make_frame``, ``train``)
- ``git``: copies of published repositories, the remote's head
- ``net``: free loopback ports, the version a controller serves (``version_at``)
- ``servers``: real models and ``python -m mlgitops.server`` processes for the server tests
- ``git_http``: a Git smart-HTTP server behind Basic authentication
- ``webhook_receiver``: a real HTTP webhook receiver on loopback
- ``browser``: headless Chromium through Playwright
- ``lanes``: the test lanes (fast, process, browser, cluster) and the collection check

``tests/`` is on ``sys.path`` (pytest's rootdir conftest), so tests import ``support.<module>``.
"""
