"""The hot path's hand-rolled helpers give what the library calls they replace give:
component labelling (a partition equal to scipy's), log-sum-exp (bit for bit scipy's),
row joining (numpy.concatenate's bytes) and the associator's trace pre-gate (no gated
pair lost)."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import logsumexp

from towerd.icd import TRACK_RECORD_DTYPE
from towerd.rf.tracker import empty_rf_tracks
from towerd.rows import join_rows
from towerd.tracking.associator import GnnAssociator, components
from towerd.tracking.imm import logsumexp_rows


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two labellings of the same nodes define the same partition."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_components_partition_equals_scipys():
    rng = np.random.default_rng(5)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        m = int(rng.integers(0, 2 * n))
        a, b = rng.integers(0, n, m), rng.integers(0, n, m)
        count, label = components(a, b, n)
        want_count, want = connected_components(coo_matrix((np.ones(m), (a, b)), shape=(n, n)), directed=False)
        assert count == want_count
        assert _same_partition(label, want)
        assert label.min() == 0 and label.max() == count - 1


def test_logsumexp_rows_is_scipys_bit_for_bit():
    rng = np.random.default_rng(6)
    for trial in range(500):
        a = rng.normal(0.0, [1e-3, 1.0, 30.0, 800.0][trial % 4], (int(rng.integers(1, 40)), 3))
        if trial % 5 == 0:
            a[:, 1] = a[:, 0]  # ties at the maximum
        if trial % 7 == 0:
            a[0, :] = -np.inf
        if trial % 11 == 0:
            a[-1, 2] = np.inf
        assert logsumexp_rows(a).tobytes() == logsumexp(a, axis=1, keepdims=True).tobytes()


def test_join_rows_gives_concatenates_bytes():
    rng = np.random.default_rng(7)
    for make in (empty_rf_tracks, lambda n: np.zeros(n, dtype=TRACK_RECORD_DTYPE)):
        parts = [make(int(n)) for n in rng.integers(0, 5, 4)]
        for p in parts:
            p.view(np.uint8)[:] = rng.integers(0, 256, p.nbytes, dtype=np.uint8)
        parts.append(parts[0][::-1])  # not contiguous as given
        got = join_rows(parts)
        assert got.dtype == parts[0].dtype and got.flags.writeable
        assert got.tobytes() == np.concatenate(parts).tobytes()
        assert join_rows(parts[:1]).tobytes() == parts[0].tobytes()


def test_trace_pregate_keeps_every_gated_pair():
    rng = np.random.default_rng(8)
    assoc = GnnAssociator()
    for _ in range(100):
        k, n = int(rng.integers(1, 30)), int(rng.integers(1, 60))
        x = np.zeros((k, 6))
        x[:, :3] = rng.uniform(-50, 50, (k, 3))
        A = rng.normal(0, rng.uniform(0.5, 8.0), (k, 6, 6))
        P = A @ np.swapaxes(A, 1, 2) + np.eye(6)
        z = rng.uniform(-50, 50, (n, 3))
        B = rng.normal(0, 1.0, (n, 3, 3))
        R = B @ np.swapaxes(B, 1, 2) + 0.1 * np.eye(3)
        ti, di = assoc.candidate_pairs(x, P, z, R)
        all_t, all_d = np.divmod(np.arange(k * n), n)
        d2 = assoc.mahalanobis2(x, P, z, R, all_t, all_d)
        gated = set(zip(all_t[d2 <= assoc.gate].tolist(), all_d[d2 <= assoc.gate].tolist()))
        assert gated <= set(zip(ti.tolist(), di.tolist()))
        assert np.array_equal(assoc.mahalanobis2(x, P, z, R, ti, di), d2[ti * n + di])
