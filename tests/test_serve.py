"""`vlexport serve` against a running Triton server (loopback only, bounded in count and time).

One server per module serves the tiny VisualBERT artifact: HTTP and gRPC answers equal
`vlexport.load`'s on the same inputs from 8 concurrent clients (within 1e-5: the dynamic batcher
merges requests into larger GEMMs, which sum in another order), Triton's metrics show requests
were merged, bad requests get a clear error naming the input while the good requests batched
beside them are answered, and SIGTERM with requests in flight ends the server cleanly.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import vlexport
from serve_kit import Server, infer, serve_python

PY, WHY = serve_python()
pytestmark = pytest.mark.skipif(PY is None, reason=WHY)
http = pytest.importorskip("tritonclient.http", reason="tritonclient (test extra) is the Triton client")
MODEL = "tiny-visualbert-vqa"


@pytest.fixture(scope="module")
def served(tiny_artifacts):
    art = tiny_artifacts[MODEL]
    server = Server([art], "--max-queue-delay-us", "20000", "--instances", "2")
    yield server, art
    server.terminate()


def feeds_for(rng, batch, text, regions):
    return {"input_ids": rng.integers(1, 2999, (batch, text)).astype(np.int64),
            "attention_mask": (np.arange(text)[None] < rng.integers(2, text + 1, (batch, 1))).astype(np.int64),
            "token_type_ids": np.zeros((batch, text), np.int64),
            "visual_embeds": rng.standard_normal((batch, regions, 16)).astype(np.float32),
            "visual_attention_mask": np.ones((batch, regions), np.int64),
            "visual_token_type_ids": np.ones((batch, regions), np.int64)}


def test_health_and_metadata(served):
    server, _ = served
    client = http.InferenceServerClient(server.url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    meta = client.get_model_metadata(MODEL)
    assert [i["name"] for i in meta["inputs"]][:2] == ["input_ids", "attention_mask"]
    assert [o["name"] for o in meta["outputs"]] == ["logits"]
    cfg = client.get_model_config(MODEL)
    assert cfg["max_batch_size"] == 32 and "dynamic_batching" in cfg
    assert [(g["count"], g["kind"]) for g in cfg["instance_group"]] == [(2, "KIND_CPU")]  # --instances 2


def test_eight_concurrent_clients_match_vlexport_load(served):
    server, art = served
    model = vlexport.load(art)
    work = []
    for client_id in range(8):
        rng = np.random.default_rng(client_id)
        text = int(rng.integers(4, 12))  # one text length per client, so the batcher can merge its peers' requests
        work.append([feeds_for(rng, int(rng.integers(1, 4)), text if i % 2 else 9, 6) for i in range(6)])
    want = [[model(**f).logits for f in reqs] for reqs in work]
    barrier = threading.Barrier(8)

    def client_run(reqs):
        client = http.InferenceServerClient(server.url)
        barrier.wait()
        try:
            return [infer(client, MODEL, f)["logits"] for f in reqs]
        finally:
            client.close()

    before = server.metrics_text()
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(client_run, work))
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    after = server.metrics_text()

    def count(text, metric):
        m = re.search(rf'^{metric}{{model="{MODEL}",version="1"}} (\d+)', text, re.M)
        return int(m.group(1))

    requests = count(after, "nv_inference_request_success") - count(before, "nv_inference_request_success")
    executions = count(after, "nv_inference_exec_count") - count(before, "nv_inference_exec_count")
    assert requests == 48
    assert executions < requests, "the dynamic batcher merged no requests"


def test_grpc_matches_http(served):
    import tritonclient.grpc as grpc

    server, art = served
    f = feeds_for(np.random.default_rng(5), 2, 8, 4)
    client = grpc.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    inputs = []
    for name, x in f.items():
        i = grpc.InferInput(name, list(x.shape), "INT64" if x.dtype == np.int64 else "FP32")
        i.set_data_from_numpy(x)
        inputs.append(i)
    got = client.infer(MODEL, inputs).as_numpy("logits")
    np.testing.assert_allclose(got, vlexport.load(art)(**f).logits, atol=1e-5, rtol=0)


BAD = [
    ("unknown input name", lambda f: {**f, "pixel_values": np.zeros((1, 3), np.float32)}, "pixel_values"),
    ("missing input", lambda f: {k: v for k, v in f.items() if k != "visual_embeds"}, "visual_embeds"),
    ("float token ids", lambda f: {**f, "input_ids": f["input_ids"].astype(np.float32)}, "input_ids"),
    ("wrong rank", lambda f: {**f, "visual_embeds": f["visual_embeds"][:, :, :, None]}, "visual_embeds"),
    ("wrong feature size", lambda f: {**f, "visual_embeds": np.zeros((1, 6, 15), np.float32)}, "visual_embeds"),
    ("batch beyond max_batch_size", lambda f: {k: np.repeat(v, 33, axis=0) for k, v in f.items()}, "batch"),
    ("token id out of range", lambda f: {**f, "input_ids": np.full_like(f["input_ids"], 10**6)}, "input_ids"),
    ("text beyond the built profile", lambda f: {k: (np.repeat(v, 11, axis=1)[:, :66] if k in (
        "input_ids", "attention_mask", "token_type_ids") else v) for k, v in f.items()}, "text"),
    ("NaN region features", lambda f: {**f, "visual_embeds": np.full_like(f["visual_embeds"], np.nan)}, "visual_embeds"),
]


@pytest.mark.parametrize("what,make,named", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_clear_error_and_neighbours_are_answered(served, what, make, named):
    from tritonclient.utils import InferenceServerException

    server, art = served
    model = vlexport.load(art)
    good = feeds_for(np.random.default_rng(11), 1, 6, 6)
    bad = make(feeds_for(np.random.default_rng(12), 1, 6, 6))
    want = model(**good).logits
    results = {}

    def send(key, f):
        client = http.InferenceServerClient(server.url)
        try:
            results[key] = infer(client, MODEL, f)["logits"]
        except InferenceServerException as exc:
            results[key] = exc
        finally:
            client.close()

    # good and bad requests at the same moment: the batcher may merge them
    threads = [threading.Thread(target=send, args=(k, f)) for k, f in
               (("good0", good), ("bad", bad), ("good1", good), ("good2", good))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    err = results["bad"]
    assert isinstance(err, InferenceServerException), f"{what}: the server accepted it"
    assert named in str(err), f"{what}: the error does not name '{named}': {err}"
    assert "Traceback" not in str(err)
    for k in ("good0", "good1", "good2"):
        assert isinstance(results[k], np.ndarray), f"a good request failed beside a bad one: {results[k]}"
        np.testing.assert_allclose(results[k], want, atol=1e-5, rtol=0)
    assert http.InferenceServerClient(server.url).is_server_ready()


def test_sigterm_with_requests_in_flight_shuts_down_cleanly(served):
    """Runs last in this module: SIGTERM while 48 requests are in flight. Each is answered or refused
    with an error (none hangs), and the server exits 0 within its exit timeout."""
    server, art = served
    rng = np.random.default_rng(7)
    f = feeds_for(rng, 32, 64, 100)  # the largest shapes the tiny artifact takes: the slowest requests
    want = vlexport.load(art)(**f).logits
    outcomes = []

    def send(_):
        client = http.InferenceServerClient(server.url, network_timeout=60, connection_timeout=10)
        try:
            got = infer(client, MODEL, f)["logits"]
        except Exception as exc:  # refused: an error response, or the connection closed by the stopping server
            outcomes.append(f"refused: {type(exc).__name__}")
            return
        finally:
            client.close()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)  # an answer is a right answer
        outcomes.append("answered")

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(send, i) for i in range(48)]
        time.sleep(0.5)
        t0 = time.monotonic()
        rc = server.terminate(timeout=60)
        stopped = time.monotonic() - t0
        for fut in futures:
            fut.result(timeout=90)
    assert rc == 0, f"vlexport serve exited {rc}:\n{server.output[-3000:]}"
    assert stopped < 45
    print("outcomes:", {o: outcomes.count(o) for o in set(outcomes)}, "stopped in", round(stopped, 1), "s")
    assert len(outcomes) == 48 and outcomes.count("answered") >= 1, outcomes


def test_sigkill_of_vlexport_serve_takes_tritonserver_down(tiny_artifacts):
    """`vlexport serve` killed hard (SIGKILL: no handler runs) leaves no tritonserver holding the ports."""
    import signal
    import subprocess

    server = Server([tiny_artifacts[MODEL]])
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.ready():
        time.sleep(0.5)
    assert not server.ready(), "tritonserver still answers after its parent was killed"
    left = subprocess.run(["pgrep", "-f", f"--http-port={server.http}"], capture_output=True, text=True).stdout.split()
    assert not left, f"tritonserver processes left behind: {left}"
