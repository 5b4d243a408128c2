"""A small remote-execution worker for tests/remote_test.py (no worker is packaged: BuildGrid's
own is buildbox-worker, in C++). Run with the Python of .venv-buildgrid (grpc and the protos
come with buildgrid):

    python remote_worker.py --server 127.0.0.1:PORT --root DIR --log FILE

It holds a bot session of the Remote Workers API (google.devtools.remoteworkers.v1test2)
and, for each lease, does what a real worker does: stages the action's input root from
CAS into a fresh directory DIR/exec-XXXX, runs the command there with exactly the action's
environment, uploads the outputs and reports the ActionResult; then deletes the directory.
Each execution is one JSON line in FILE (its first argument, exit code). tests/remote_test.py
runs it in a mount namespace where the client's workspace and HOME are empty tmpfs.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from buildgrid._protos.google.devtools.remoteworkers.v1test2 import bots_pb2, bots_pb2_grpc

DEADLINE = 30         # seconds: without a deadline an UpdateBotSession may block for 300 s
BATCH = 1 << 20       # bytes per BatchReadBlobs / BatchUpdateBlobs call


def digest_of(data: bytes) -> re_pb2.Digest:
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


class Cas:
    def __init__(self, channel, instance: str):
        self.stub = re_grpc.ContentAddressableStorageStub(channel)
        self.instance = instance

    def read(self, digests) -> dict:
        """{hash: bytes} of *digests*."""
        found, batch, size = {}, [], 0
        todo = {d.hash: d for d in digests if d.size_bytes}
        for d in list(todo.values()) + [None]:
            if d is not None and size + d.size_bytes < BATCH and len(batch) < 500:
                batch.append(d)
                size += d.size_bytes
                continue
            if batch:
                reply = self.stub.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(
                    instance_name=self.instance, digests=batch), timeout=DEADLINE)
                for r in reply.responses:
                    if r.status.code:
                        raise RuntimeError("cannot read %s from CAS: %s" % (r.digest.hash, r.status.message))
                    found[r.digest.hash] = r.data
            batch, size = ([d], d.size_bytes) if d is not None else ([], 0)
        found.update((d.hash, b"") for d in digests if not d.size_bytes)
        return found

    def write(self, blobs: list) -> None:
        """Upload *blobs* (bytes)."""
        batch, size = [], 0
        for data in blobs + [None]:
            if data is not None and size + len(data) < BATCH:
                batch.append(data)
                size += len(data)
                continue
            if batch:
                reply = self.stub.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(
                    instance_name=self.instance,
                    requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=digest_of(b), data=b) for b in batch]),
                    timeout=DEADLINE)
                for r in reply.responses:
                    if r.status.code:
                        raise RuntimeError("cannot write %s to CAS: %s" % (r.digest.hash, r.status.message))
            batch, size = ([data], len(data)) if data is not None else ([], 0)

    def message(self, digest, cls):
        m = cls()
        m.ParseFromString(self.read([digest])[digest.hash])
        return m


def stage(cas: Cas, digest, path: str) -> None:
    """Write the Directory tree *digest* into *path*."""
    os.makedirs(path, exist_ok=True)
    directory = cas.message(digest, re_pb2.Directory)
    blobs = cas.read([f.digest for f in directory.files])
    for f in directory.files:
        target = os.path.join(path, f.name)
        with open(target, "wb") as out:
            out.write(blobs[f.digest.hash])
        os.chmod(target, 0o555 if f.is_executable else 0o444)
    for link in directory.symlinks:
        os.symlink(link.target, os.path.join(path, link.name))
    for d in directory.directories:
        stage(cas, d.digest, os.path.join(path, d.name))


def execute(cas: Cas, action, root: str, log: str) -> re_pb2.ActionResult:
    command = cas.message(action.command_digest, re_pb2.Command)
    work = os.path.join(root, "exec-%s" % uuid.uuid4().hex[:12])
    try:
        stage(cas, action.input_root_digest, work)
        cwd = os.path.join(work, command.working_directory)
        outputs = list(command.output_paths) or list(command.output_files) + list(command.output_directories)
        for out in outputs:
            os.makedirs(os.path.dirname(os.path.join(cwd, out)), exist_ok=True)
        env = {v.name: v.value for v in command.environment_variables}
        result = subprocess.run(list(command.arguments), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with open(log, "a") as f:
            f.write(json.dumps({"argv0": command.arguments[0], "exit": result.returncode,
                                "cwd": cwd}) + "\n")
        ar = re_pb2.ActionResult(exit_code=result.returncode)
        blobs = [result.stdout, result.stderr]
        ar.stdout_digest.CopyFrom(digest_of(result.stdout))
        ar.stderr_digest.CopyFrom(digest_of(result.stderr))
        for out in outputs:
            path = os.path.join(cwd, out)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    data = f.read()
                blobs.append(data)
                ar.output_files.add(path=out, digest=digest_of(data), is_executable=os.access(path, os.X_OK))
        cas.write(blobs)
        return ar
    finally:
        for d, _dirs, _files in os.walk(work):       # inputs were staged read-only
            os.chmod(d, 0o755)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--instance", default="")
    ap.add_argument("--root", required=True)
    ap.add_argument("--log", required=True)
    opts = ap.parse_args()
    channel = grpc.insecure_channel(opts.server)
    bots = bots_pb2_grpc.BotsStub(channel)
    cas = Cas(channel, opts.instance)
    session = bots_pb2.BotSession(bot_id="shim-test-%d" % os.getpid(), status=bots_pb2.BotStatus.OK)
    session.worker.devices.add(handle="shim-test")
    while True:
        try:
            session = bots.CreateBotSession(bots_pb2.CreateBotSessionRequest(
                parent=opts.instance, bot_session=session), timeout=DEADLINE)
            break
        except grpc.RpcError as e:
            print("remote_worker: CreateBotSession: %s" % e.code(), file=sys.stderr, flush=True)
            time.sleep(1)
    print("remote_worker: session %s" % session.name, file=sys.stderr, flush=True)
    while True:
        for lease in session.leases:
            if lease.state == bots_pb2.LeaseState.PENDING:
                lease.state = bots_pb2.LeaseState.ACTIVE
            if lease.state != bots_pb2.LeaseState.ACTIVE:
                continue
            action = re_pb2.Action()
            if lease.payload.Is(re_pb2.Action.DESCRIPTOR):
                lease.payload.Unpack(action)
            else:
                digest = re_pb2.Digest()
                lease.payload.Unpack(digest)
                action = cas.message(digest, re_pb2.Action)
            try:
                lease.result.Pack(execute(cas, action, opts.root, opts.log))
                lease.status.code = 0
            except Exception as e:      # the lease fails, the worker goes on
                lease.status.code = 13            # INTERNAL
                lease.status.message = str(e)
                print("remote_worker: %r" % e, file=sys.stderr, flush=True)
            lease.state = bots_pb2.LeaseState.COMPLETED
        try:
            session = bots.UpdateBotSession(bots_pb2.UpdateBotSessionRequest(
                name=session.name, bot_session=session), timeout=DEADLINE)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                print("remote_worker: UpdateBotSession: %s" % e.code(), file=sys.stderr, flush=True)
                time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
