"""The ``traceprop`` command: ``demo``, ``trace``, ``erase``, ``verify``, ``refresh``, ``recover`` and
``keygen``.

Run ``traceprop COMMAND --help`` for each command's options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = """examples:
  traceprop demo --applicants 20000 --out demo_output
  traceprop trace demo_output/model --sample 17
  traceprop trace demo_output/model --source demo_output/data/bureau.csv --rows 4821
  traceprop keygen --out keys/
  traceprop erase demo_output/model --source demo_output/data/bureau.csv --rows 4821 7203 \\
      --key demo_output/keys/signing_key.pem --certificate erasure.json
  traceprop erase demo_output/model --requests requests.csv --key demo_output/keys/signing_key.pem \
      --out-dir certificates/
  traceprop verify erasure.json --public-key demo_output/keys/signing_key.pub.pem
  traceprop verify demo_output/model --public-key demo_output/keys/signing_key.pub.pem
  traceprop refresh demo_output/model
  traceprop recover demo_output/model
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="traceprop",
        description="Row-level lineage from source files to model predictions; erasure with signed certificates.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo(sub)
    _add_trace(sub)
    _add_erase(sub)
    _add_verify(sub)
    _add_recover(sub)
    _add_refresh(sub)
    _add_keygen(sub)
    return p


def _add_demo(sub) -> None:
    d = sub.add_parser(
        "demo",
        help="end-to-end credit-risk demo: data, ETL with lineage, training, explanation, erasure, report",
        description="Generate the credit-risk data, run the ETL with lineage in pandas and in SQL, train a "
        "logistic regression, explain a declined applicant down to source rows, erase one applicant's "
        "bureau rows, and write a signed certificate and report.html.",
    )
    d.add_argument("--applicants", type=int, default=20_000, help="number of applicants (default 20000)")
    d.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    d.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    d.add_argument("--k", type=int, default=1024, help="gradient store projection dimension (default 1024)")
    d.add_argument("--no-sql", action="store_true", help="skip the SQL half of the ETL")


def _add_trace(sub) -> None:
    t = sub.add_parser(
        "trace",
        help="source rows behind training samples / rows, or the samples behind source rows",
        description="TARGET is a model folder (written by the demo or save_model) or a traced Parquet file "
        "(df.tp.to_parquet). Without options, prints a summary of the lineage.",
    )
    t.add_argument("target", help="model folder or traced .parquet file")
    t.add_argument("--sample", type=int, nargs="+", help="training sample / row positions to trace back")
    t.add_argument("--source", help="source file path (forward query, with --rows)")
    t.add_argument("--rows", type=int, nargs="+", help="0-based data rows of --source")


def _add_erase(sub) -> None:
    e = sub.add_parser(
        "erase",
        help="erase source rows from a saved model and write a signed certificate",
        description="Forget every training sample whose lineage contains one of the rows, update the model "
        "folder in place, and write the signed certificate.",
    )
    e.add_argument("model", help="model folder (written by the demo or save_model)")
    e.add_argument("--source", help="source file the rows come from")
    e.add_argument("--rows", type=int, nargs="+", help="0-based data rows (header excluded)")
    e.add_argument(
        "--requests",
        help="CSV of requests (request_id,source,rows,received) erased in one solve, one certificate each: "
        "consecutive entries of the model's ledger, committed with the model; copies written to --out-dir. "
        "Instead of --source/--rows",
    )
    e.add_argument(
        "--out-dir", default="erasure_certificates", help="folder for the certificates of --requests"
    )
    e.add_argument(
        "--method", choices=["newton", "gradient", "retrain"], help="default: newton for convex models"
    )
    e.add_argument(
        "--rebuild",
        metavar="MODULE:FUNCTION",
        help="re-run the feature pipeline without the rows: FUNCTION() returns (X, y) built with the traced "
        "readers, as for fit (MODULE importable from the current folder, or a path/to/file.py); statistics "
        "and aggregates that read the rows are recomputed and the model corrected to the rebuilt table",
    )
    e.add_argument(
        "--key", required=True, help="Ed25519 private key (PEM) to sign with; see `traceprop keygen`"
    )
    e.add_argument("--certificate", default="erasure_certificate.json", help="where to write the certificate")
    e.add_argument(
        "--regulation", nargs="+", default=["EU_AI_ACT_ART26", "GDPR_ART17"], help="regulation tags"
    )
    e.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long to wait while another process erases from the same model (default: until it is done)",
    )
    e.add_argument(
        "--dry-run",
        action="store_true",
        help="write the certificate but change neither the model nor its store",
    )


def _add_verify(sub) -> None:
    v = sub.add_parser(
        "verify",
        help="check a certificate, or a model folder's whole erasure ledger",
        description="TARGET is a certificate file: exit status 0 if it was signed by the holder of the key "
        "and not altered. TARGET is a model folder: every certificate in its ledger verifies, the chain "
        "links (no certificate missing or replaced), and the model on disk is the one the last erasure "
        "left. Exit status 1 otherwise.",
    )
    v.add_argument("certificate", metavar="TARGET", help="certificate JSON file or model folder")
    v.add_argument("--public-key", required=True, help="issuer's Ed25519 public key (PEM)")


def _add_recover(sub) -> None:
    r = sub.add_parser(
        "recover",
        help="finish or undo an erasure a crash interrupted",
        description="If a crash interrupted a write of MODEL, roll it forward (the crash came after the "
        "commit point) or back (before it), so the folder holds exactly the state before or after.",
    )
    r.add_argument("model", help="model folder")


def _add_refresh(sub) -> None:
    f = sub.add_parser(
        "refresh",
        help="refill a model's gradient store without the samples erased so far",
        description="Retrain the ensemble members and recompute every checkpoint's gradients of MODEL's "
        "gradient store without the erased samples, so the store no longer carries their influence "
        "(`traceprop verify MODEL` reports a store that still does).",
    )
    f.add_argument("model", help="model folder")
    f.add_argument(
        "--wait", type=float, default=None, metavar="SECONDS", help="how long to wait for the lock"
    )


def _add_keygen(sub) -> None:
    k = sub.add_parser("keygen", help="create an Ed25519 signing key pair (PEM)")
    k.add_argument("--out", default=".", help="folder for signing_key.pem and signing_key.pub.pem")
    k.add_argument("--force", action="store_true", help="overwrite existing keys")


# ---------------------------------------------------------------------------- commands
def _lineage_of(target: str):
    from traceprop_frames.frames import read_traced, resolve

    p = Path(target)
    if p.is_dir():
        from traceprop_frames.unlearn.bundle import ModelFolder

        lineage = ModelFolder.open(
            p
        ).lineage()  # never unpickles model.pkl: safe on a folder someone sent you
        if lineage is None:
            raise SystemExit(f"traceprop: {target}: the model was trained without lineage")
        return lineage
    return resolve(read_traced(p))


def cmd_trace(args) -> int:
    lin = _lineage_of(args.target)
    if args.source is not None:
        if not args.rows:
            raise SystemExit("traceprop trace: --source needs --rows")
        hits = lin.rows_from_source(args.source, args.rows)
        print(f"{args.source} rows {args.rows} feed {len(hits)} training row(s): {hits.tolist()}")
    for i in args.sample or []:
        print(f"row {i}:")
        for sr in lin.trace(i, strict=False):
            flag = {True: "sha256 ok", False: "FILE CHANGED", None: "in memory"}[sr.sha256_ok]
            print(f"    {sr.trace_to_file()}  ({flag})")
    if args.source is None and not args.sample:
        print(f"{len(lin)} rows, {lin.n_ids} source-row references")
        for path, rows in lin.sources().items():
            print(f"    {path}: {len(rows)} rows")
        print("ops:", " → ".join(lin.ops()))
    return 0


def cmd_erase(args) -> int:
    from traceprop_frames.unlearn import load_private_key
    from traceprop_frames.unlearn.folder import erase_in_folder

    if (args.requests is None) == (args.source is None or args.rows is None):
        print("error: pass either --source with --rows, or --requests FILE", file=sys.stderr)
        return 2
    if args.requests is not None:
        return _erase_batch(args)
    extra = {} if args.rebuild is None else {"rebuild": _load_callable(args.rebuild)}
    cert = erase_in_folder(
        args.model, source=args.source, rows=args.rows, method=args.method, key=load_private_key(args.key),
        regulations=args.regulation, dry_run=args.dry_run, timeout=args.wait, **extra,
    )  # fmt: skip
    cert.save(args.certificate)  # a copy for the requester; the model folder's ledger holds the original
    for label, value in cert.summary():
        print(f"  {label:>26}: {value}")
    print(
        f"certificate written to {args.certificate}" + (" (model unchanged: dry run)" if args.dry_run else "")
    )
    return 0


def _load_callable(spec: str):
    """``module:function`` (importable from the current folder) or ``path/to/file.py:function``."""
    import importlib
    import importlib.util
    import os

    mod_name, sep, fn_name = spec.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise SystemExit(f"traceprop erase: --rebuild wants MODULE:FUNCTION, got {spec!r}")
    if mod_name.endswith(".py"):
        loc = importlib.util.spec_from_file_location(Path(mod_name).stem, mod_name)
        if loc is None or not Path(mod_name).exists():
            raise SystemExit(f"traceprop erase: --rebuild: no such file {mod_name!r}")
        module = importlib.util.module_from_spec(loc)
        loc.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(mod_name)
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise SystemExit(f"traceprop erase: --rebuild: {mod_name} has no function {fn_name!r}")
    return fn


def _erase_batch(args) -> int:
    from traceprop_frames._durable import atomic_write_many
    from traceprop_frames.unlearn import load_private_key
    from traceprop_frames.unlearn.batch import read_requests
    from traceprop_frames.unlearn.folder import erase_requests_in_folder

    requests = read_requests(args.requests)
    certs = erase_requests_in_folder(
        args.model, requests, method=args.method, key=load_private_key(args.key), regulations=args.regulation,
        dry_run=args.dry_run, timeout=args.wait,
    )  # fmt: skip
    out = Path(args.out_dir)  # copies for the requesters; the model folder's ledger holds the originals
    atomic_write_many(
        {out / f"{r['request_id']}.json": c.to_json().encode("ascii") for r, c in zip(requests, certs)}
    )
    b, chain = certs[0].body["batch"], [c.body["chain"]["sequence"] for c in certs]
    print(f"{len(certs)} requests, {b['n_samples']} training samples erased in one solve ({b['solve_id']})")
    print(
        f"certificates written to {out}/<request_id>.json"
        + (" (model unchanged: dry run)" if args.dry_run else f"; ledger entries {chain[0]}–{chain[-1]}")
    )
    return 0


def cmd_verify(args) -> int:
    from traceprop_frames.errors import CertificateError
    from traceprop_frames.unlearn import verify_certificate

    if Path(args.certificate).is_dir():
        return _verify_folder(args)
    try:
        cert = verify_certificate(args.certificate, args.public_key)
    except CertificateError as e:
        print(f"INVALID: {e}", file=sys.stderr)
        return 1
    print(f"OK: {args.certificate} is authentic and unaltered")
    for label, value in cert.summary():
        print(f"  {label:>26}: {value}")
    return 0


def _verify_folder(args) -> int:
    from traceprop_frames.errors import CertificateError, ModelFolderError
    from traceprop_frames.unlearn import ledger
    from traceprop_frames.unlearn.bundle import ModelFolder

    try:
        certs = ledger.verify_chain(args.certificate, args.public_key)
        n_data = ModelFolder(args.certificate).verify_data()  # sha256 of data/*.npy; nothing is unpickled
    except (CertificateError, ModelFolderError) as e:
        print(f"INVALID: {e}", file=sys.stderr)
        return 1
    data = f"; its {n_data} training data file(s) match bundle.json" if n_data else ""
    store = _store_report(args.certificate)
    if not certs:
        print(f"OK: {args.certificate} has no erasures recorded in its ledger{data}")
        if store:
            print(store)
        return 0
    print(
        f"OK: {args.certificate}: {len(certs)} erasure certificate(s), chain intact, model on disk matches{data}"
    )
    for c in certs:
        fs = c.body["forget_set"]
        print(f"  {c.body['chain']['sequence']:>4}  {c.id[:12]}  {c.body['created_at']}  {c.status:>7}  "
              f"{fs['count']} sample(s)  {c.body['model']['fingerprint_after'][:12]}")  # fmt: skip
        ev, want = c.body["evidence"], c.body["method"]["parameters"].get("bound")
        if want is not None and ev["certified_bound"] is not None and not ev["certified_bound"] <= want:
            print(f"        certified bound {ev['certified_bound']:.3e} NOT met (requested {want:.3e})")
        sec = c.body.get("shared_statistics")
        if sec is not None and sec["sets"]:
            state = "effect removed" if sec["effect_removed"] else "NOT removed"
            print(f"        shared statistics {state}: " + ", ".join(s["op"] for s in sec["sets"]))
    if store:
        print(store)
    return 0


def _store_report(folder) -> str | None:
    """One line on the model folder's gradient store: does it still carry erased samples' influence?"""
    from traceprop_frames.unlearn.bundle import ModelFolder

    path = ModelFolder(folder).meta().get("store")
    if not path or not Path(path).exists():
        return None
    from traceprop_frames.attribution import GradientStore
    from traceprop_frames.unlearn.refresh import erased_influence

    held = erased_influence(GradientStore.open(path, mode="r"))
    if held:
        return (
            f"WARNING: the gradient store {path} still carries the influence of {held} erased sample(s) "
            f"(its checkpoints were computed before their erasure): run `traceprop refresh {folder}`"
        )
    return f"the gradient store {path} carries no erased sample's influence"


def cmd_refresh(args) -> int:
    from traceprop_frames.unlearn.folder import refresh_in_folder

    info = refresh_in_folder(args.model, timeout=args.wait)
    print(
        f"{args.model}: gradient store refilled without the erased samples ({info['erased']} erased "
        f"sample(s) no longer carried; {info['checkpoints']} checkpoint(s), {info['seconds']:.1f} s)"
    )
    return 0


def cmd_recover(args) -> int:
    from traceprop_frames.unlearn.bundle import ModelFolder

    if not Path(args.model).is_dir():
        raise SystemExit(f"traceprop recover: {args.model} is not a folder")
    outcome = ModelFolder(args.model).recover()
    print(f"{args.model}: " + {
        "clean": "nothing to recover (no interrupted write)",
        "rolled back": "an interrupted write was rolled back: the folder is as before it",
        "rolled forward": "an interrupted write was completed: the folder is as after it",
    }[outcome])  # fmt: skip
    return 0


def cmd_keygen(args) -> int:
    from traceprop_frames.unlearn import generate_key, save_private_key, save_public_key

    out = Path(args.out)
    priv, pub = out / "signing_key.pem", out / "signing_key.pub.pem"
    if priv.exists() and not args.force:
        raise SystemExit(f"traceprop keygen: {priv} exists (use --force to overwrite)")
    key = generate_key()
    save_private_key(key, priv)
    save_public_key(key, pub)
    print(f"private key: {priv} (keep it secret)\npublic key:  {pub} (give it to auditors)")
    return 0


def cmd_demo(args) -> int:
    from traceprop_frames.demo import run_demo

    run_demo(applicants=args.applicants, out=args.out, seed=args.seed, k=args.k, sql=not args.no_sql)
    return 0


def main(argv=None) -> int:
    """Entry point of the ``traceprop`` console script."""
    from traceprop_frames.errors import TracepropError

    args = _parser().parse_args(argv)
    handler = {
        "demo": cmd_demo,
        "trace": cmd_trace,
        "erase": cmd_erase,
        "verify": cmd_verify,
        "keygen": cmd_keygen,
        "recover": cmd_recover,
        "refresh": cmd_refresh,
    }
    try:
        return handler[args.command](args)
    except TracepropError as e:
        print(f"traceprop {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
