"""A bare synchronous gRPC server answering one empty unary method: the CPU floor of a Python gRPC call.

`python bench/emulator/floor_server.py PORT`; the benchmark calls `/bench.Floor/Call` on it.
"""

from __future__ import annotations

import sys
from concurrent import futures

import grpc
from google.protobuf import empty_pb2


def main() -> None:
    port = int(sys.argv[1])

    def call(request: empty_pb2.Empty, context: grpc.ServicerContext) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    handler = grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=empty_pb2.Empty.FromString, response_serializer=empty_pb2.Empty.SerializeToString
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Floor", {"Call": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
