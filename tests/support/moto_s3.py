"""An S3 server with conditional writes for tests: ``python -m tests.support.moto_s3 PORT``.

moto's S3 (``moto[server]``, PyPI) answers ``If-None-Match: *`` and ``If-Match: <etag>`` on PutObject with 412 as
AWS S3 does, but it checks the condition and stores the object in two steps without a lock: served by several
threads at once, two conditional writes can both pass. Served here by one thread (werkzeug, HTTP/1.0: one
request per connection), each request runs alone, so each conditional write is atomic, as on AWS S3 and MinIO.
"""

from __future__ import annotations

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)  # path-style requests to 127.0.0.1 go to S3
    run_simple("127.0.0.1", port, app, threaded=False, use_reloader=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
