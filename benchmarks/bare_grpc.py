"""A bare grpcio asyncio server with no model: the floor of any V2 gRPC server built on grpcio.

``ModelInfer`` answers one constant, pre-serialized ``ModelInferResponse`` (the small model's
``predict_proba`` shape) without parsing the request, so what it measures is grpcio's asyncio
server alone: HTTP/2 framing, its event loop integration, one Python coroutine a call. Dockyard's
gRPC service runs on the same server (issue 16 asks for grpcio's asyncio server), so its
throughput is bounded by this one's: ``python benchmarks/bare_grpc.py --port P``.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc

from dockyard.serving.grpc_v2 import grpc_predict_v2_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
ANSWER: bytes = pb.ModelInferResponse(
    model_name="small",
    outputs=[
        pb.ModelInferResponse.InferOutputTensor(
            name="predict_proba",
            datatype="FP64",
            shape=[1, 2],
            contents=pb.InferTensorContents(fp64_contents=[0.25, 0.75]),
        )
    ],
).SerializeToString()


async def _infer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return ANSWER


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handlers = {"ModelInfer": grpc.unary_unary_rpc_method_handler(_infer)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))
