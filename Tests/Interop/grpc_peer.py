#!/usr/bin/env python3
"""A standard gRPC peer (Python grpcio) for AgentFlow's interop tests.

  client:  opens P2PMesh/Connect to a master, sends N envelopes, expects each
           echoed back in order, then half-closes and expects grpc-status OK.
  unknown: calls a method the master does not serve; expects UNIMPLEMENTED.
  server:  serves P2PMesh/Connect, echoing every envelope; prints "PORT n",
           runs until stdin closes or --seconds pass.

Prints one JSON line with the result; exits non-zero on any mismatch.
The message classes come from Protos/ compiled at start with grpc_tools.protoc,
so the wire contract is the same file the Swift code is generated from.
"""
import argparse, importlib, json, os, sys, tempfile, threading

import grpc
from grpc_tools import protoc

METHOD = "/agentflow.mesh.v1.P2PMesh/Connect"


def load_messages(proto_root):
    out = tempfile.mkdtemp(prefix="agentflow-py-")
    status = protoc.main(["protoc", f"-I{proto_root}", f"--python_out={out}",
                          os.path.join(proto_root, "agentflow/mesh/v1/p2p_mesh.proto")])
    if status != 0:
        sys.exit(f"protoc failed with {status}")
    sys.path.insert(0, out)
    return importlib.import_module("agentflow.mesh.v1.p2p_mesh_pb2")


def credentials(args):
    read = lambda path: open(path, "rb").read()
    return read(args.ca), read(args.key), read(args.cert)


def run_client(args, pb):
    target = args.target
    if args.plaintext:
        channel = grpc.insecure_channel(target)
    else:
        ca, key, cert = credentials(args)
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        # The server's certificate names its node id, not "127.0.0.1".
        channel = grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", args.server_name)])
    connect = channel.stream_stream(METHOD, request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=pb.Envelope.FromString)
    if args.mode == "unknown":
        other = channel.unary_unary("/agentflow.mesh.v1.P2PMesh/Nope", request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            other(b"", timeout=10)
            print(json.dumps({"ok": False, "error": "an unknown method succeeded"}))
            return 1
        except grpc.RpcError as error:
            print(json.dumps({"ok": error.code() == grpc.StatusCode.UNIMPLEMENTED, "code": str(error.code()), "details": error.details()}))
            return 0 if error.code() == grpc.StatusCode.UNIMPLEMENTED else 1

    def requests():
        for n in range(1, args.count + 1):
            envelope = pb.Envelope()
            envelope.task_log.header.sequence = n
            envelope.task_log.task = "interop"
            envelope.task_log.line = b"x" * (n % 500)
            yield envelope

    received = []
    try:
        call = connect(requests(), timeout=30)
        for envelope in call:
            received.append(envelope.task_log.header.sequence)
        code = call.code()
    except grpc.RpcError as error:
        print(json.dumps({"ok": False, "code": str(error.code()), "details": error.details(), "received": len(received)}))
        return 1
    ok = received == list(range(1, args.count + 1)) and code == grpc.StatusCode.OK
    print(json.dumps({"ok": ok, "received": len(received), "code": str(code)}))
    return 0 if ok else 1


def run_server(args, pb):
    from concurrent import futures

    def connect(request_iterator, context):
        for envelope in request_iterator:
            yield envelope

    handler = grpc.method_handlers_generic_handler("agentflow.mesh.v1.P2PMesh", {
        "Connect": grpc.stream_stream_rpc_method_handler(connect, request_deserializer=pb.Envelope.FromString,
                                                         response_serializer=lambda m: m.SerializeToString()),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    if args.plaintext:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        ca, key, cert = credentials(args)
        creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
        port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    print(f"PORT {port}", flush=True)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait(args.seconds)
    server.stop(grace=1)
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["client", "unknown", "server"])
    parser.add_argument("--protos", required=True)
    parser.add_argument("--target", default="")
    parser.add_argument("--server-name", default="server")
    parser.add_argument("--ca"); parser.add_argument("--cert"); parser.add_argument("--key")
    parser.add_argument("--plaintext", action="store_true")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    pb = load_messages(args.protos)
    sys.exit(run_server(args, pb) if args.mode == "server" else run_client(args, pb))


if __name__ == "__main__":
    main()
