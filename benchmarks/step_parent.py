"""The step benchmark's parent side: one worker subprocess per backend,
set up one after the other, then their rounds interleaved (or one backend
after the other), each within its time budget."""

import json
import os
import subprocess
import sys
import time

from absl import flags

from benchmarks.step_worker import TOKEN

FLAGS = flags.FLAGS
# The worker runs as a module from the repository root, as the benchmarks do.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _worker_argv(backend, output):
    argv = [sys.executable, "-m", "benchmarks.step_throughput"]
    for name in FLAGS:
        flag = FLAGS[name]
        if flag.present and name not in (
            "worker_backend", "worker_output", "backends", "output", "backend_timeouts"
        ):
            argv.append(flag.serialize())
    argv += [f"--worker_backend={backend}", f"--worker_output={output}"]
    return argv


_LIVE_WORKERS = []


def kill_workers(*_):
    """Kill every worker still running (on exit, or when the parent is killed)."""
    for worker in _LIVE_WORKERS:
        if worker.proc.poll() is None:
            worker.proc.kill()
    if _:
        sys.exit(1)


class WorkerProcess:
    """The parent's handle on one backend's worker subprocess."""

    def __init__(self, backend, tmp):
        self.backend = backend
        self.output = os.path.join(tmp, f"{backend}.json")
        self.log_path = os.path.join(tmp, f"{backend}.log")
        env = dict(os.environ, KERAS_BACKEND=backend)
        if FLAGS.xla_dump and backend in ("tensorflow", "jax"):
            dump = os.path.join(tmp, f"xla_{backend}")
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_dump_to={dump}").strip()
            env["_BENCH_XLA_DUMP"] = dump
            # A program read from JAX's persistent compilation cache is not
            # compiled, so it would leave no dump to look in.
            env.pop("JAX_COMPILATION_CACHE_DIR", None)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            _worker_argv(backend, self.output), env=env, text=True, bufsize=1, cwd=REPO_ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
        )
        _LIVE_WORKERS.append(self)
        self.busy_seconds = 0.0
        self.error = None
        overrides = dict(item.split("=", 1) for item in FLAGS.backend_timeouts)
        self.timeout = float(overrides.get(backend, FLAGS.worker_timeout))

    def _wait(self, token):
        """Wait for `token` from the worker within its remaining time budget."""
        import select

        start = time.perf_counter()
        while True:
            remaining = self.timeout - self.busy_seconds - (time.perf_counter() - start)
            if remaining <= 0:
                self.busy_seconds += time.perf_counter() - start
                self.kill(f"timed out after {self.timeout:.0f} s of work")
                return False
            ready, _, _ = select.select([self.proc.stdout], [], [], min(remaining, 5.0))
            if not ready:
                continue
            line = self.proc.stdout.readline()
            if not line:  # the worker exited
                self.busy_seconds += time.perf_counter() - start
                return token == "exit"
            words = line.split()
            if words[:1] == [TOKEN]:
                self.busy_seconds += time.perf_counter() - start
                if words[1] == token:
                    return True
                if words[1] == "exit":
                    return False

    def send(self, command, token):
        if self.error or self.proc.poll() is not None:
            return False
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except OSError:
            return False
        return self._wait(token)

    def kill(self, reason):
        self.error = reason
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def result(self):
        if self.proc.poll() is None and not self.error:
            self.send("finish", "exit")
            try:
                self.proc.wait(timeout=max(30, self.timeout - self.busy_seconds))
            except subprocess.TimeoutExpired:
                self.kill("timed out while finishing")
        self.log.close()
        result = {"backend": self.backend}
        if os.path.exists(self.output):
            with open(self.output) as f:
                result = json.load(f)
        if self.error:
            result["error"] = self.error
        elif "error" not in result and self.proc.returncode:
            result["error"] = f"exit code {self.proc.returncode}"
        if "error" in result:
            with open(self.log_path, errors="ignore") as f:
                result["log_tail"] = f.read()[-3000:]
        result["busy_seconds"] = self.busy_seconds
        return result


def run_backends(tmp):
    """Set the workers up one at a time, then run their rounds interleaved."""
    if not FLAGS.interleave_backends:
        results = []
        for backend in FLAGS.backends:
            results += _run_rounds(_start_workers([backend], tmp))
        return results
    return _run_rounds(_start_workers(FLAGS.backends, tmp))


def _start_workers(backends, tmp):
    workers = []
    for backend in backends:
        print(f"[step_throughput] {backend}: building, compiling, warming up ...", flush=True)
        worker = WorkerProcess(backend, tmp)
        if not worker._wait("ready") and not worker.error:
            worker.error = "failed during setup"
        workers.append(worker)
    return workers


def _run_rounds(workers):
    live = [w for w in workers if not w.error]
    for index in range(FLAGS.repeats):
        names = ",".join(w.backend for w in live)
        print(f"[step_throughput] round {index + 1}/{FLAGS.repeats} ({names})", flush=True)
        # Rotate the backends' order so none always runs first in a round.
        shift = index % max(len(live), 1)
        for worker in live[shift:] + live[:shift]:
            if not worker.error and not worker.send(f"round {index}", "done"):
                worker.error = worker.error or "failed during a round"
    return [w.result() for w in workers]
