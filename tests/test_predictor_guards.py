"""Guards in Predictor.run that keep wrong answers and runaway allocations out: one thread per predictor, ids
inside the table they index, inputs inside a memory budget, broadcast views never expanded to be checked."""

import threading

import numpy as np
import pytest

import hwdeploy
from hwdeploy import ConcurrentUseError, InputError, zoo


@pytest.fixture(scope="module")
def encoder():
    p = hwdeploy.predictor("zoo:transformer_encoder", device="cpu", threads=1)
    yield p
    p.close()


def _token_batches(n):
    return [zoo.sample_inputs("transformer_encoder", batch=2, seed=seed) for seed in range(n)]


def test_a_shared_predictor_never_returns_another_threads_output(encoder):
    batches = _token_batches(8)
    expected = [encoder.run(*b)[0] for b in batches]
    wrong, refused, right = [], [], []
    start = threading.Barrier(8)

    def worker(i):
        start.wait()
        for _ in range(25):
            try:
                out, = encoder.run(*batches[i])
            except ConcurrentUseError as exc:
                refused.append(str(exc))
                continue
            (right if np.array_equal(out, expected[i]) else wrong).append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not wrong, f"{len(wrong)} calls got another thread's output"
    assert right and len(right) + len(refused) == 8 * 25
    assert refused and "clone()" in refused[0]  # 8 threads on one predictor do collide


def test_clones_in_threads_match_single_threaded_runs_bit_for_bit(encoder):
    batches = _token_batches(8)
    expected = [encoder.run(*b)[0] for b in batches]
    clones = [encoder.clone() for _ in batches]
    results = {}

    def worker(i):
        results[i] = [clones[i].run(*batches[i])[0] for _ in range(10)]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(np.array_equal(out, expected[i]) for i in range(8) for out in results[i])


def test_a_closed_clone_says_so_and_leaves_its_original_running(encoder):
    """Each clone feeds its own Paddle predictor's handles: closing one touches neither the original nor another."""
    tokens = _token_batches(1)[0]
    expected = encoder.run(*tokens)[0]
    closed, other = encoder.clone(), encoder.clone()
    closed.close()
    with pytest.raises(hwdeploy.BackendError, match="the predictor is closed"):
        closed.run(*tokens)
    assert np.array_equal(encoder.run(*tokens)[0], expected) and np.array_equal(other.run(*tokens)[0], expected)


@pytest.mark.parametrize("bad_id", [-1, 1000, 2**40])
def test_token_ids_outside_the_vocabulary_are_refused(encoder, bad_id):
    assert encoder.inputs[0].value_range == (0, 1000)  # read from the program's embedding table
    tokens, = zoo.sample_inputs("transformer_encoder", batch=2)
    tokens = tokens.copy()
    tokens[1, 3] = bad_id
    with pytest.raises(InputError, match=r"outside \[0, 1000\)"):
        encoder.run(tokens)  # the fast path
    with pytest.raises(InputError, match=r"outside \[0, 1000\)"):
        encoder.run({"tokens": tokens})  # the full path
    tokens[1, 3] = 999
    assert np.isfinite(encoder.run(tokens)[0]).all()


def test_inputs_over_the_budget_are_refused_before_anything_is_copied():
    p = hwdeploy.predictor("zoo:mlp", device="cpu", threads=1)
    p.max_input_bytes = 1 << 20
    with pytest.raises(InputError, match=r"exceeds the input budget of 0\.00 GiB.*max_input_bytes"):
        p.run(np.zeros((8192, 64), np.float32))  # 2 MiB
    assert p.run(np.zeros((1024, 64), np.float32))[0].shape == (1024, 8)  # 256 KiB: fine


def test_a_huge_broadcast_view_is_refused_not_materialised():
    p = hwdeploy.predictor("zoo:mlp", device="cpu", threads=1)
    view = np.broadcast_to(np.zeros((1, 64), np.float32), (10**8, 64))  # 25.6 GB logically, 256 B stored
    with pytest.raises(InputError, match="exceeds the input budget"):
        p.run(view)
    small = np.broadcast_to(np.full((1, 64), np.nan, np.float32), (4, 64))
    with pytest.raises(InputError, match="NaN/Inf"):
        p.run(small)  # checked on its distinct elements
