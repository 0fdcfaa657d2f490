"""Bad input to the public LSH and reversible forwards: each error is raised at the function the user
called and names the user's argument (issue 17). Parametrised over the classes NaN / inf, Python lists,
integer arrays, wrong shapes, counts <= 0 and empty inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reference.architecture.reversible import reversible_forward
from reference.architecture.reversible_blocks import ReversibleConfig
from reference.attention.lsh import lsh_attention_forward, lsh_hash, project_queries, sample_rotations
from reference.attention.lsh_dense import lsh_dense_forward
from reference.registry import get

LSH = get("attention.lsh").example()
C = LSH.config
KW = dict(n_heads=C.n_heads, n_buckets=C.n_buckets, chunk_len=C.chunk_len)
REV = get("architecture.reversible").example()
RC = REV.config.runtime()


def _layers(case, n):
    return [{k.split(".", 1)[1]: v for k, v in case.params.items() if k.startswith(f"l{i}.")} for i in range(n)]


def _lsh_call(fn, x=None, params=None, buckets=None, **changes):
    x = LSH.inputs["x"] if x is None else x
    params = LSH.params if params is None else params
    buckets = LSH.static["buckets"] if buckets is None else buckets
    kw = {**KW, **changes}
    if fn is lsh_dense_forward:
        kw.pop("chunk_len")
    return fn(x, params, buckets, **kw)


def _nan(a, value=math.nan):
    b = np.array(a, dtype=np.float64)
    b.flat[3] = value
    return b


BAD_LSH = [
    ("x", TypeError, dict(x=LSH.inputs["x"].tolist())),
    ("x", TypeError, dict(x=LSH.inputs["x"].astype(np.int64))),
    ("x", ValueError, dict(x=_nan(LSH.inputs["x"]))),
    ("x", ValueError, dict(x=_nan(LSH.inputs["x"], math.inf))),
    ("x", ValueError, dict(x=LSH.inputs["x"][:0])),
    ("x", ValueError, dict(x=LSH.inputs["x"][0])),
    ("w_qk", ValueError, dict(params={**LSH.params, "w_qk": _nan(LSH.params["w_qk"])})),
    ("w_qk", TypeError, dict(params={**LSH.params, "w_qk": LSH.params["w_qk"].tolist()})),
    ("w_v", TypeError, dict(params={**LSH.params, "w_v": LSH.params["w_v"].astype(np.int32)})),
    ("w_o", ValueError, dict(params={**LSH.params, "w_o": _nan(LSH.params["w_o"])})),
    ("w_o", ValueError, dict(params={**LSH.params, "w_o": LSH.params["w_o"][:-1]})),
    ("params", TypeError, dict(params=list(LSH.params.values()))),
    ("params", ValueError, dict(params={"w_qk": LSH.params["w_qk"]})),
    ("n_heads", ValueError, dict(n_heads=0)),
    ("n_heads", ValueError, dict(n_heads=-2)),
    ("n_buckets", ValueError, dict(n_buckets=0)),
    ("buckets", TypeError, dict(buckets=LSH.static["buckets"] * 1.0)),
    ("buckets", TypeError, dict(buckets=LSH.static["buckets"].tolist())),
    ("buckets", ValueError, dict(buckets=LSH.static["buckets"] + C.n_buckets)),
    ("buckets", ValueError, dict(buckets=LSH.static["buckets"][:, :, :0])),
    ("buckets", ValueError, dict(buckets=LSH.static["buckets"][:, :2])),
    ("attention_mask", TypeError, dict(attention_mask=np.ones((C.batch, C.seq_len), dtype=np.int64))),
    ("attention_mask", ValueError, dict(attention_mask=np.ones((C.batch, C.seq_len + 1), dtype=bool))),
]


@pytest.mark.parametrize("fn", [lsh_attention_forward, lsh_dense_forward], ids=["chunked", "dense"])
@pytest.mark.parametrize("name,error,change", BAD_LSH, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD_LSH)])
def test_lsh_forward_names_the_argument(fn, name, error, change):
    with pytest.raises(error, match=name):
        _lsh_call(fn, **change)


@pytest.mark.parametrize("name,change", [("chunk_len", dict(chunk_len=0)), ("chunk_len", dict(chunk_len=3)),
                                         ("duplicate_correction", dict(attend_across_buckets=True))])
def test_lsh_chunk_and_mode_errors(name, change):
    with pytest.raises(ValueError, match=name):
        _lsh_call(lsh_attention_forward, **change)


Q = project_queries(LSH.inputs["x"], LSH.params["w_qk"], C.n_heads)
ROT = LSH.static["rotations"]


@pytest.mark.parametrize("name,error,args", [
    ("q", ValueError, (_nan(Q), ROT)),
    ("q", TypeError, (Q.tolist(), ROT)),
    ("q", TypeError, (Q.astype(np.int64), ROT)),
    ("rotations", ValueError, (Q, _nan(ROT))),
    ("rotations", ValueError, (Q, ROT[:, :2])),
    ("rotations", ValueError, (Q, ROT[:, :, :, :0])),
    ("rotations", TypeError, (Q, ROT.tolist())),
])
def test_lsh_hash_names_the_argument(name, error, args):
    with pytest.raises(error, match=name):
        lsh_hash(*args)


@pytest.mark.parametrize("name,args", [("n_hashes", (1, 1, 2, 0, 4)), ("n_buckets", (1, 1, 2, 1, 3)),
                                       ("n_heads", (1, 0, 2, 1, 4)), ("batch", (0, 1, 2, 1, 4))])
def test_sample_rotations_names_the_argument(name, args):
    with pytest.raises(ValueError, match=name):
        sample_rotations(np.random.default_rng(0), *args, xp=np, dtype=np.float64)


def test_project_queries_names_n_heads_and_w_qk():
    with pytest.raises(ValueError, match="n_heads"):
        project_queries(LSH.inputs["x"], LSH.params["w_qk"], 0)
    with pytest.raises(ValueError, match="w_qk"):
        project_queries(LSH.inputs["x"], _nan(LSH.params["w_qk"]), C.n_heads)


LAYERS = _layers(REV, REV.config.n_layers)
TAPES = REV.static["tapes"]
X = REV.inputs["x"]
BAD_REV = [
    ("x", TypeError, dict(x=X.tolist())),
    ("x", TypeError, dict(x=X.astype(np.int64))),
    ("x", ValueError, dict(x=_nan(X))),
    ("x", ValueError, dict(x=X[:, :0])),
    ("x", ValueError, dict(x=X[0])),
    ("layers", TypeError, dict(layers=[])),
    ("layers", TypeError, dict(layers=LAYERS[0])),
    (r"layers\[1\]", ValueError, dict(layers=[LAYERS[0], {}, LAYERS[2]])),
    (r"layers\[0\]\['w_q'\]", ValueError, dict(layers=[{**LAYERS[0], "w_q": _nan(LAYERS[0]["w_q"])}, *LAYERS[1:]])),
    (r"layers\[2\]\['w_1'\]", TypeError, dict(layers=[*LAYERS[:2], {**LAYERS[2], "w_1": LAYERS[2]["w_1"].tolist()}])),
    ("tapes", ValueError, dict(tapes=TAPES[:1])),
    (r"tapes\[0\]", TypeError, dict(tapes=[tuple(TAPES[0]), *TAPES[1:]])),
    ("config", TypeError, dict(config={"n_heads": 2})),
    ("n_heads", ValueError, dict(config=None, make=lambda: ReversibleConfig(n_heads=0))),
    ("n_ff_chunks", ValueError, dict(config=ReversibleConfig(n_heads=2, n_ff_chunks=99))),
]


@pytest.mark.parametrize("name,error,change", BAD_REV, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD_REV)])
def test_reversible_forward_names_the_argument(name, error, change):
    args = {"x": X, "layers": LAYERS, "tapes": TAPES, "config": RC, **change}
    make = args.pop("make", None)
    with pytest.raises(error, match=name):
        if make is not None:
            make()
        reversible_forward(args["x"], args["layers"], args["tapes"], args["config"])
