"""Minimum-cost assignment without SciPy: a dense rectangular solver with the contract of
``scipy.optimize.linear_sum_assignment``, and a sparse one for gated tracking problems.

Why not SciPy: ``scipy.optimize`` (with ``scipy.sparse`` and ``scipy.linalg`` it pulls
in) adds tens of MiB of resident memory to a tower computer for one small function, and
the problems trackers solve are tiny: a frame's gated pairs fall apart into components
of one or two tracks.

- :func:`linear_sum_assignment` ``(cost) -> (rows, cols)``: cost (R, C) float, any shape;
  ``+inf`` marks a forbidden pair; every row is assigned when R <= C, every column when
  R > C; ``ValueError`` for NaN or −inf entries and for a matrix with no finite complete
  assignment. Rows come out increasing (as SciPy's). The algorithm is SciPy's: the
  shortest augmenting path of Crouse (*On implementing 2D rectangular assignment
  algorithms*, IEEE Trans. AES 52(4), 2016, pp. 1685-1686), a Jonker-Volgenant variant,
  with the same tie-breaking (of equally short paths, the last one ending on a free
  column; columns scanned in SciPy's order), so it returns SciPy's assignment, not only
  one of equal cost. Plain Python lists for small matrices (a few µs); NumPy over each
  path's remaining columns for wide ones.
- :func:`assign_sparse` ``(rows, cols, cost, miss) -> chosen``: the gated problem of a
  tracker, given as M candidate pairs (row i may take column j at ``cost``) where row r
  may instead stay unassigned at ``miss[r]`` and a column may stay unused at no cost. It
  splits the pairs into connected components (:func:`components`), solves every
  component with one row or one column in one vectorised step, and each other one
  exactly with :func:`linear_sum_assignment` on its augmented matrix [D | diag(miss)].
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["assign_sparse", "components", "linear_sum_assignment"]

_INF = math.inf
_WIDE = 64
"""Matrices with more columns than this scan each path's remaining columns with NumPy."""
_FEW_PAIRS = 200
"""Up to this many pairs outside 1-1 components are solved in plain Python."""
_EMPTY = np.zeros(0, dtype=np.intp)
_EMPTY.flags.writeable = False


def linear_sum_assignment(cost: np.ndarray, maximize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Rectangular minimum-cost assignment: cost (R, C) -> (rows (A,) intp, cols (A,)
    intp), A = min(R, C), minimising cost[rows, cols].sum() (maximising with
    ``maximize``); +inf entries are forbidden pairs. Raises ValueError for NaN or −inf
    entries (+inf with ``maximize``) and when no finite complete assignment exists. See
    the module docstring."""
    c = np.asarray(cost, dtype=float)
    if c.ndim != 2:
        raise ValueError(f"expected a matrix (2-D array), got a {c.ndim}-D array")
    if maximize:
        c = -c
    transpose = c.shape[1] < c.shape[0]
    if transpose:
        c = c.T
    nr, nc = c.shape
    if nr == 0:
        return _EMPTY.copy(), _EMPTY.copy()
    if np.isnan(c).any() or (c == -_INF).any():
        raise ValueError("matrix contains invalid numeric entries")
    col4row = _solve_wide(np.ascontiguousarray(c)) if nc > _WIDE else _solve_lists(c.tolist(), nr, nc)
    if col4row is None:
        raise ValueError("cost matrix is infeasible")
    rows = np.arange(nr, dtype=np.intp)
    cols = np.asarray(col4row, dtype=np.intp)
    if transpose:
        order = np.argsort(cols)
        return cols[order], rows[order]
    return rows, cols


def _solve_lists(cost: list[list[float]], nr: int, nc: int) -> list[int] | None:
    """Shortest augmenting path on nested lists (nr <= nc): col4row, or None if infeasible."""
    u = [0.0] * nr
    v = [0.0] * nc
    path = [-1] * nc
    col4row = [-1] * nr
    row4col = [-1] * nc
    for cur in range(nr):
        spc = [_INF] * nc  # shortest path cost to each column
        remaining = list(range(nc - 1, -1, -1))
        seen_rows: list[int] = []
        seen_cols: list[int] = []
        i, min_val, sink = cur, 0.0, -1
        while sink == -1:
            seen_rows.append(i)
            row, base = cost[i], min_val - u[i]
            index, lowest = -1, _INF
            for it, j in enumerate(remaining):
                r = base + row[j] - v[j]
                s = spc[j]
                if r < s:
                    path[j] = i
                    spc[j] = s = r
                if s < lowest or (s == lowest and row4col[j] == -1):
                    lowest, index = s, it
            min_val = lowest
            if min_val == _INF:
                return None
            j = remaining[index]
            if row4col[j] == -1:
                sink = j
            else:
                i = row4col[j]
            seen_cols.append(j)
            remaining[index] = remaining[-1]
            remaining.pop()
        _finish(cur, min_val, sink, seen_rows, seen_cols, spc, u, v, path, col4row, row4col)
    return col4row


def _solve_wide(cost: np.ndarray) -> list[int] | None:
    """:func:`_solve_lists` with each scan over the remaining columns done by NumPy."""
    nr, nc = cost.shape
    u = [0.0] * nr
    v = np.zeros(nc)
    path = np.full(nc, -1, dtype=np.intp)
    col4row = [-1] * nr
    row4col = np.full(nc, -1, dtype=np.intp)
    for cur in range(nr):
        spc = np.full(nc, _INF)
        remaining = np.arange(nc - 1, -1, -1, dtype=np.intp)
        n_rem = nc
        seen_rows: list[int] = []
        seen_cols: list[int] = []
        i, min_val, sink = cur, 0.0, -1
        while sink == -1:
            seen_rows.append(i)
            rem = remaining[:n_rem]
            r = (min_val - u[i]) + cost[i, rem] - v[rem]
            s = spc[rem]
            better = r < s
            s = np.where(better, r, s)
            spc[rem] = s
            path[rem[better]] = i
            lowest = float(s.min())
            if lowest == _INF:
                return None
            at_min = s == lowest
            free = np.flatnonzero(at_min & (row4col[rem] == -1))
            index = int(free[-1]) if len(free) else int(np.argmax(at_min))
            min_val = lowest
            j = int(rem[index])
            if row4col[j] == -1:
                sink = j
            else:
                i = int(row4col[j])
            seen_cols.append(j)
            n_rem -= 1
            remaining[index] = remaining[n_rem]
        spc_l = spc.tolist()
        v_l = v.tolist()
        path_l = path.tolist()
        r4c = row4col.tolist()
        _finish(cur, min_val, sink, seen_rows, seen_cols, spc_l, u, v_l, path_l, col4row, r4c)
        v[:] = v_l
        row4col[:] = r4c
    return col4row


def _finish(cur: int, min_val: float, sink: int, seen_rows: list[int], seen_cols: list[int], spc: list[float],
            u: list[float], v: list[float], path: list[int], col4row: list[int], row4col: list[int]) -> None:
    """Update the dual variables after row ``cur``'s shortest path, then augment along it."""
    u[cur] += min_val
    for i in seen_rows:
        if i != cur:
            u[i] += min_val - spc[col4row[i]]
    for j in seen_cols:
        v[j] -= min_val - spc[j]
    j = sink
    while True:
        i = path[j]
        row4col[j] = i
        col4row[i], j = j, col4row[i]
        if i == cur:
            break


def components(a: np.ndarray, b: np.ndarray, n: int) -> tuple[int, np.ndarray]:
    """Connected components of the undirected graph on nodes 0..n−1 with edges (a[i], b[i]):
    (count, label (n,) intp in 0..count−1, numbered in order of each component's least
    node). Union-find over the edges in plain Python: a frame's gated pairs are a few
    dozen, where a sparse-matrix graph search costs more than the search itself."""
    parent = list(range(n))
    for x, y in zip(a.tolist(), b.tolist()):
        while parent[x] != x:
            parent[x] = x = parent[parent[x]]
        while parent[y] != y:
            parent[y] = y = parent[parent[y]]
        if x != y:
            parent[max(x, y)] = min(x, y)
    label = [0] * n
    count = 0
    for x in range(n):  # parent[x] <= x always, so a root is the least node of its component
        r = parent[x]
        if r == x:
            label[x] = count
            count += 1
        else:
            label[x] = label[r]  # r < x is labelled already, with its root's label
    return count, np.asarray(label, dtype=np.intp)


def assign_sparse(rows: np.ndarray, cols: np.ndarray, cost: np.ndarray, miss: np.ndarray) -> np.ndarray:
    """Optimal assignment of a sparse problem: M candidate pairs (rows[i], cols[i]) of
    cost cost[i] (finite), where row r may instead stay unassigned at cost miss[r] (miss
    indexed by row number) and a column may stay unused at no cost; each row and each
    column is used at most once. Returns the indices (A,) intp into the pairs of the
    chosen ones, in order of row.

    A pair costing more than its row's miss is never chosen (missing is cheaper and frees
    the column). A component with a single row or a single column takes its pair of least
    cost − miss[row] (when that is <= 0); the others are solved by
    :func:`linear_sum_assignment` on [D | diag(miss)] (+inf off the gated pairs and the
    diagonal), so the total of the costs of the chosen pairs and the misses of the other
    rows is minimal."""
    rows, cols = np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)
    cost, miss = np.asarray(cost, dtype=float), np.asarray(miss, dtype=float)
    if len(rows) == 0:
        return _EMPTY.copy()
    worth = ~(cost > miss[rows])
    if not worth.all():
        keep = np.flatnonzero(worth)
        return keep[assign_sparse(rows[keep], cols[keep], cost[keep], miss)]
    # A pair alone on its row and its column is a component of its own: taken as it is.
    alone = (np.bincount(rows)[rows] == 1) & (np.bincount(cols)[cols] == 1)
    if alone.all():
        return np.argsort(rows, kind="stable")
    rest = np.flatnonzero(~alone)
    solve = _components_in_python if len(rest) <= _FEW_PAIRS else _components_solved
    chosen = np.concatenate([np.flatnonzero(alone), rest[solve(rows[rest], cols[rest], cost[rest], miss)]])
    return chosen[np.argsort(rows[chosen], kind="stable")]


def _components_in_python(rows: np.ndarray, cols: np.ndarray, cost: np.ndarray, miss: np.ndarray) -> np.ndarray:
    """:func:`_components_solved` in plain Python, for a few pairs (where NumPy's calls
    cost more than the work): the same components, the same choice in each (the first
    pair of least cost − miss; the same augmented matrices, rows and columns in
    increasing order, for :func:`_solve_lists`)."""
    r_l, c_l, cost_l = rows.tolist(), cols.tolist(), cost.tolist()
    miss_l = miss.tolist()
    miss_of = {r: miss_l[r] for r in set(r_l)}
    # Union-find over plain ints: row r is node r, column c node off + c (tuples as
    # nodes cost a hash of a new tuple per look-up).
    off = max(r_l) + 1
    parent: dict[int, int] = {}

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = node = parent[parent[node]]
        return node

    for r, c in zip(r_l, c_l):
        a, b = root(parent.setdefault(r, r)), root(parent.setdefault(off + c, off + c))
        if a != b:
            parent[b] = a
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(r_l):
        groups.setdefault(root(r), []).append(i)
    out: list[int] = []
    for members in groups.values():
        g_rows = sorted({r_l[i] for i in members})
        g_cols = sorted({c_l[i] for i in members})
        if len(g_rows) == 1 or len(g_cols) == 1:
            out.append(min(members, key=lambda i: cost_l[i] - miss_of[r_l[i]]))  # min: the first of equals
            continue
        m, n = len(g_rows), len(g_cols)
        row_at = {r: k for k, r in enumerate(g_rows)}
        col_at = {c: k for k, c in enumerate(g_cols)}
        dense = [[_INF] * (n + m) for _ in range(m)]
        pair_at: dict[tuple[int, int], int] = {}
        for i in members:
            a, b = row_at[r_l[i]], col_at[c_l[i]]
            dense[a][b] = cost_l[i]
            pair_at[(a, b)] = i
        for a, r in enumerate(g_rows):
            dense[a][n + a] = miss_of[r]
        col4row = _solve_lists(dense, m, n + m) if n + m <= _WIDE else _solve_wide(np.array(dense))
        assert col4row is not None  # every row can miss: always feasible
        out.extend(pair_at[(a, b)] for a, b in enumerate(col4row) if b < n)
    return np.asarray(out, dtype=np.intp)


def _components_solved(rows: np.ndarray, cols: np.ndarray, cost: np.ndarray, miss: np.ndarray) -> np.ndarray:
    """:func:`assign_sparse` of pairs that are not alone in their component, in any order."""
    r_ids, t_row = np.unique(rows, return_inverse=True)
    c_ids, d_col = np.unique(cols, return_inverse=True)
    kt = len(r_ids)
    n_comp, label = components(t_row, kt + d_col, kt + len(c_ids))
    comp = label[t_row]  # component of each pair
    rows_in = np.bincount(label[:kt], minlength=n_comp)
    cols_in = np.bincount(label[kt:], minlength=n_comp)
    simple = (rows_in[comp] == 1) | (cols_in[comp] == 1)

    out: list[np.ndarray] = []
    s_idx = np.flatnonzero(simple)
    if len(s_idx):  # one row or one column: the pair of least cost − miss wins (<= 0: pairs costing more are gone)
        gain = cost[s_idx] - miss[rows[s_idx]]
        order = s_idx[np.lexsort((gain, comp[s_idx]))]
        first = np.ones(len(order), dtype=bool)
        first[1:] = comp[order[1:]] != comp[order[:-1]]
        out.append(order[first])

    g_idx = np.flatnonzero(~simple)
    if len(g_idx):  # several of each: the augmented problem of each component
        g_idx = g_idx[np.argsort(comp[g_idx], kind="stable")]
        bounds = np.flatnonzero(np.diff(comp[g_idx])) + 1
        for part in np.split(g_idx, bounds):
            rows_t, r = np.unique(t_row[part], return_inverse=True)
            cols_d, c = np.unique(d_col[part], return_inverse=True)
            m, n = len(rows_t), len(cols_d)
            dense = np.full((m, n + m), _INF)
            dense[r, c] = cost[part]
            dense[np.arange(m), n + np.arange(m)] = miss[r_ids[rows_t]]
            pair_at = np.empty((m, n), dtype=np.intp)
            pair_at[r, c] = part
            rr, cc = linear_sum_assignment(dense)
            hit = cc < n
            out.append(pair_at[rr[hit], cc[hit]])

    return np.concatenate(out) if len(out) > 1 else out[0]

