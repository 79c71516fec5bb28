"""infra/terraform, checked offline: its structure (python-hcl2), its format (terraform fmt,
where the binary is installed) and its policies (checkov, every skip justified).

`terraform validate`/`plan` need the AWS provider, which cannot be fetched here; these
checks are what can be run without it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from jobs.publish import layout

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "infra" / "terraform"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


def _clean(value: Any) -> Any:
    """python-hcl2 keeps HCL's quotes on keys and strings: drop them."""
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if k not in ("__is_block__",)}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@pytest.fixture(scope="module")
def tf() -> dict[str, dict[str, dict[str, Any]]]:
    """{block kind: {"type.name" or name: body}} over every .tf file."""
    out: dict[str, dict[str, Any]] = {"resource": {}, "data": {}, "variable": {}, "output": {}}
    for path in sorted(TF.glob("*.tf")):
        parsed = _clean(hcl2.loads(path.read_text()))
        for kind in ("resource", "data"):
            for entry in parsed.get(kind, []):
                for rtype, named in entry.items():
                    for name, body in named.items():
                        out[kind][f"{rtype}.{name}"] = body
        for kind in ("variable", "output"):
            for entry in parsed.get(kind, []):
                out[kind].update(entry)
        for entry in parsed.get("locals", []):
            out.setdefault("locals", {}).update(entry)
    return out


def _one(block: Any) -> dict[str, Any]:
    return block[0] if isinstance(block, list) else block


def _statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["statement"] if isinstance(doc["statement"], list) else [doc["statement"]]


def test_the_bucket_is_private_encrypted_and_keeps_nothing_erasure_removed(tf) -> None:
    res = tf["resource"]
    block = res["aws_s3_bucket_public_access_block.recs"]
    for setting in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert block[setting] is True
    sse = _one(
        _one(res["aws_s3_bucket_server_side_encryption_configuration.recs"]["rule"])[
            "apply_server_side_encryption_by_default"
        ]
    )
    # AES256, not KMS: the publisher's verify step compares ETags with the bodies' MD5.
    assert sse["sse_algorithm"] == "AES256"
    # No versions: an erased person's list must not survive as an old version.
    assert not any(name.startswith("aws_s3_bucket_versioning") for name in res)
    rules = res["aws_s3_bucket_lifecycle_configuration.recs"]["rule"]
    rules = rules if isinstance(rules, list) else [rules]
    # Nothing expires by age (the live publish may be old; recflow prunes): only
    # unfinished multipart uploads are cleared.
    assert [r["id"] for r in rules] == ["abort-incomplete-uploads"]
    assert "expiration" not in rules[0]


def test_only_the_distribution_reads_and_only_the_served_prefix(tf) -> None:
    doc = tf["data"]["aws_iam_policy_document.bucket"]
    allow = [s for s in _statements(doc) if s.get("effect", "Allow") == "Allow"]
    assert len(allow) == 1
    (read,) = allow
    assert read["actions"] == ["s3:GetObject"]
    assert read["resources"] == ["${aws_s3_bucket.recs.arn}/${local.recs_path}"]
    assert _one(read["principals"])["identifiers"] == ["cloudfront.amazonaws.com"]
    cond = _one(read["condition"])
    assert cond["variable"] == "AWS:SourceArn"
    assert cond["values"] == ["${aws_cloudfront_distribution.recs.arn}"]
    deny = [s for s in _statements(doc) if s.get("effect") == "Deny"]
    assert deny and _one(deny[0]["condition"])["variable"] == "aws:SecureTransport"
    assert "s3:ListBucket" not in json.dumps(read)  # a listing would enumerate users' keys


def test_immutable_and_changing_objects_get_their_own_cache_policies(tf) -> None:
    res = tf["resource"]
    dist = res["aws_cloudfront_distribution.recs"]
    default = _one(dist["default_cache_behavior"])
    assert default["cache_policy_id"] == '${aws_cloudfront_cache_policy.recs["immutable"].id}'
    # One ordered behaviour per path of local.changing_paths (a dynamic block).
    (dynamic,) = [d["ordered_cache_behavior"] for d in dist["dynamic"]]
    assert dynamic["for_each"] == "${local.changing_paths}"
    template = _one(dynamic["content"])
    assert template["path_pattern"] == "${ordered_cache_behavior.value}"
    # The layout's keys (jobs.publish.layout) that change between publishes, and the 404.
    latest = "/${var.publish_prefix}" + layout.latest_key("")
    slots = "/${var.publish_prefix}" + layout.slot_root("", 0).rsplit("/", 2)[0] + "/*"
    paths = [
        p.replace("${local.not_found_page}", tf["locals"]["not_found_page"])
        for p in tf["locals"]["changing_paths"]
    ]
    assert set(paths) == {latest, slots, "/${var.publish_prefix}" + layout.not_found_key("")}
    ordered = {p: template for p in paths}
    for behaviour in ordered.values():
        assert behaviour["cache_policy_id"] == '${aws_cloudfront_cache_policy.recs["changing"].id}'
    for behaviour in [default, *ordered.values()]:
        assert behaviour["viewer_protocol_policy"] == "redirect-to-https"
        assert behaviour["compress"] is False  # the objects are stored gzip-encoded
        assert behaviour["response_headers_policy_id"].startswith(
            "${aws_cloudfront_response_headers_policy.recs"
        )
    policy = res["aws_cloudfront_cache_policy.recs"]
    assert policy["for_each"] == "${local.cache_ttls}"
    assert policy["max_ttl"] == "${each.value.max}" and policy["min_ttl"] == "${each.value.min}"
    ttls = tf["locals"]["cache_ttls"]
    assert set(ttls) == {"immutable", "changing"}
    assert ttls["changing"]["max"] == "${var.latest_cache_seconds}"
    assert tf["variable"]["latest_cache_seconds"]["default"] == 60
    assert ttls["immutable"]["max"] == 31536000 and ttls["immutable"]["min"] == 86400
    oac = res["aws_cloudfront_origin_access_control.recs"]
    assert (oac["signing_behavior"], oac["signing_protocol"]) == ("always", "sigv4")


def test_a_missing_key_reaches_clients_as_the_published_json_404(tf) -> None:
    dist = tf["resource"]["aws_cloudfront_distribution.recs"]
    errors = {e["error_code"]: e for e in dist["custom_error_response"]}
    # S3 answers 403 for a missing key (no ListBucket); S3Store.get treats only 404 as
    # "missing", and so does a browser's fallback to popular.json.
    assert set(errors) == {403, 404}
    page = tf["locals"]["not_found_page"]
    assert page == "/${var.publish_prefix}" + layout.not_found_key("")
    for error in errors.values():
        assert error["response_code"] == 404
        assert error["response_page_path"] == "${local.not_found_page}"


def _iam_statements(tf, name: str) -> list[dict[str, Any]]:
    return _statements(tf["data"][f"aws_iam_policy_document.{name}"])


@pytest.mark.parametrize("role", ["publisher", "spark"])
def test_every_role_is_least_privilege(tf, role: str) -> None:
    statements = _iam_statements(tf, role)
    for s in statements:
        assert "*" not in s["actions"] and not any(a.endswith(":*") for a in s["actions"])
        for resource in s["resources"]:
            assert resource != "*" and not resource.endswith(":::*")
        bucket_level = {"s3:ListBucket", "s3:ListBucketMultipartUploads"}
        if bucket_level & set(s["actions"]):
            # Listing: on the bucket itself only (so a missing key answers 404, not 403).
            assert set(s["actions"]) <= bucket_level
            assert all("/" not in r.split(":::", 1)[-1].split("}", 1)[-1] for r in s["resources"])
        elif any(a.startswith("s3:") for a in s["actions"]):  # objects: named prefixes only
            assert all("/" in r and r.split("/", 1)[1] for r in s["resources"]), s["resources"]
    actions = {a for s in statements for a in s["actions"]}
    assert "s3:ListBucket" in actions and "s3:AbortMultipartUpload" in actions
    if role == "spark":  # the lake, never the published bucket
        assert "recs" not in json.dumps(statements)
    if role == "publisher":
        assert "cloudfront:CreateInvalidation" in actions
        assert "s3:ListBucketVersions" not in actions and "s3:PutBucketPolicy" not in actions


def test_the_service_has_no_aws_role(tf) -> None:
    # Its model is baked in, its features come from Redis: least privilege is none.
    assert not [name for name in tf["resource"] if "service" in name]


def test_the_cdn_keeps_no_access_log(tf) -> None:
    # Request paths hold each user's key: a log would keep it outside erasure.
    assert "logging_config" not in tf["resource"]["aws_cloudfront_distribution.recs"]


def test_terraform_fmt_leaves_the_files_as_they_are() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on this machine (the structure tests above still ran)")
    done = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TF)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout


def test_every_checkov_skip_says_why() -> None:
    skips = [
        line.strip()
        for path in TF.glob("*.tf")
        for line in path.read_text().splitlines()
        if "checkov:skip" in line
    ]
    assert skips
    for skip in skips:
        assert re.fullmatch(r"#checkov:skip=CKV2?_AWS_\d+:.{30,}", skip), skip


@pytest.mark.slow
def test_checkov_finds_no_failed_policy() -> None:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} missing: `make checkov` installs it (make test does)")
    done = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            str(TF),
            "--framework",
            "terraform",
            "--skip-download",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(done.stdout)
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert summary["failed"] == 0, failed
    assert summary["passed"] > 50 and summary["resource_count"] >= 15
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    assert skipped == {
        line.split("=", 1)[1].split(":", 1)[0]
        for path in TF.glob("*.tf")
        for line in path.read_text().splitlines()
        if "checkov:skip" in line
    }  # checkov skipped exactly what the files justify, nothing else
