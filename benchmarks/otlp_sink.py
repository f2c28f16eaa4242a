"""A local OTLP/HTTP trace sink for benchmarks: accepts exports, decodes them, keeps counts.

It answers POST /v1/traces like a collector (an ExportTraceServiceResponse) and GET /stats with
the exports and spans received, so a benchmark that turns tracing on pays the whole export path
(batching, protobuf encoding, HTTP) and can check the spans arrived. Nothing is stored.

    python benchmarks/otlp_sink.py --port 4318
"""

from __future__ import annotations

import argparse
import gzip
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

COUNTS = {"exports": 0, "spans": 0}
REPLY = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        COUNTS["exports"] += 1
        COUNTS["spans"] += sum(
            len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
        )
        self._reply(REPLY, "application/x-protobuf")

    def do_GET(self) -> None:
        self._reply(json.dumps(COUNTS).encode(), "application/json")

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Sink).serve_forever()


if __name__ == "__main__":
    main()
