"""The ready-to-post package: zip contents, caption/hashtags, and the disclosure read back
from the files themselves (MP4 metadata, PNG text chunks, signed C2PA manifests)."""

from __future__ import annotations

import datetime
import json
import zipfile

import pytest

from fakes import draft_pipeline
from llmpopcorn.core.errors import ConfigError, DataError
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import Idea, RunRecord
from llmpopcorn.pipeline.package import (
    ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    C2PASigner,
    hashtags_for,
    make_package,
    read_c2pa,
    signer_from_settings,
)


def make_test_cert(tmp_path, *, bare: bool = False):
    """A throwaway CA and an ES256 signing certificate, as C2PA expects (end-entity
    first, issued by a CA, digitalSignature + emailProtection)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn):
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LLMPopcorn tests"),
            ]
        )

    def usage(sign: bool, ca: bool):
        return x509.KeyUsage(
            digital_signature=sign,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("Test CA"))
        .issuer_name(name("Test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage(False, True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    issuer, issuer_key = name("Test CA"), ca_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name("Test signer"))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(True, False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
    )
    if not bare:  # C2PA wants the key identifiers; a "bare" certificate lacks them
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    chain = cert.public_bytes(pem) + ca.public_bytes(pem)
    cert_path, key_path = tmp_path / "signer.pem", tmp_path / "signer.key"
    cert_path.write_bytes(chain)
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def run(tmp_path):
    settings = Settings(out_dir=tmp_path / "runs", score=False)
    record = draft_pipeline(settings).make("a corgi learns to surf")
    return record


def _unzip(path, tmp_path):
    out = tmp_path / "unzipped"
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["clip.mp4", "cover.png", "metadata.json"]
        archive.extractall(out)
    return out


def test_package_carries_the_disclosure_in_every_file(run, tmp_path):
    import av
    from PIL import Image

    from llmpopcorn.backends.media import probe_mp4
    from llmpopcorn.pipeline.report import load_record

    path = make_package(run.run_dir)
    assert path.name == "package.zip" and str(path.parent) == run.run_dir
    files = _unzip(path, tmp_path)
    meta = json.loads((files / "metadata.json").read_text())
    assert meta["title"] == run.idea.title
    # the draft renderers are algorithms, not generative models: "synthetic", said honestly
    assert meta["ai_generated"] is False and meta["synthetic"] is True
    assert meta["disclosure"].startswith("Synthetic content") and "not filmed" in meta["disclosure"]
    # the idea's own caption for viewers, never the generation prompt; its hashtags are the
    # query's topics (the stand-in), not the title's pattern words
    assert meta["caption"] == run.idea.caption and run.idea.caption
    assert run.idea.video_prompt not in meta["post_text"]
    assert meta["hashtags"][-1] == "#AIGenerated" and "#corgi" in meta["hashtags"]
    title_words = {w.lower() for w in run.idea.title.split()} - {"a", "corgi", "learns", "surf"}
    assert not {t[1:].lower() for t in meta["hashtags"]} & title_words, meta["hashtags"]
    assert "stand-in" in meta["hashtags_from"]
    stages = {m["stage"]: m for m in meta["models"]}
    assert stages["cover"]["backend"] == "draft" and stages["clip"]["model"] == "draft-clip-v1"
    assert stages["idea"]["note"].startswith("no language model")
    assert meta["c2pa"]["signed"] is False and "POPCORN_C2PA_CERT" in meta["c2pa"]["reason"]
    # the PNG text chunks
    with Image.open(files / "cover.png") as cover:
        assert cover.text["AI-Disclosure"] == meta["disclosure"]
        assert cover.text["DigitalSourceType"] == ALGORITHMIC_MEDIA
    # the MP4 metadata, and the clip is the same clip (remuxed, not re-encoded)
    with av.open(str(files / "clip.mp4")) as container:
        assert container.metadata["comment"] == meta["disclosure"]
        assert container.metadata["title"] == run.idea.title
    original = probe_mp4(f"{run.run_dir}/clip.mp4")
    packaged = probe_mp4(files / "clip.mp4")
    assert packaged["codec"] == "h264" and packaged["frames"] == original["frames"]
    # the record lists the package
    listed = load_record(run.run_dir).artifacts[-1]
    assert listed.path == "package.zip" and listed.meta["signed_c2pa"] is False


@pytest.fixture
def hosted_run(tmp_path, monkeypatch):
    """A run whose cover and clip come from (fake) fal: generative models."""
    from fake_hosted_server import FakeHostedServer, mp4_bytes
    from llmpopcorn.pipeline.core import Pipeline

    monkeypatch.setenv("FAL_KEY", "fal-package-test-key")
    with FakeHostedServer() as server:
        server.files["clip.mp4"] = mp4_bytes()
        opts = {"base_url": server.url, "poll_interval": "0.01"}
        settings = Settings(
            image="fal-flux",
            video="fal-ltx",
            image_options=opts,
            video_options=opts,
            out_dir=tmp_path / "runs",
            score=False,
        )
        yield Pipeline(settings).make("a corgi learns to surf")


def test_signed_package_declares_a_generative_ai_source(hosted_run, tmp_path):
    import av
    from PIL import Image

    run = hosted_run
    cert, key = make_test_cert(tmp_path)
    signer = C2PASigner.from_files(cert, key)
    assert signer.algorithm() == "es256"
    files = _unzip(make_package(run.run_dir, signer=signer), tmp_path)
    meta = json.loads((files / "metadata.json").read_text())
    assert meta["c2pa"]["signed"] is True
    assert meta["ai_generated"] is True and meta["disclosure"].startswith("AI-generated")
    used = {m["stage"]: m for m in meta["models"]}
    assert used["cover"]["model"] == "fal-ai/flux/schnell" and used["cover"]["provider"] == "fal"
    assert used["clip"]["request_id"] == "req-2"
    assert "fal-package-test-key" not in json.dumps(meta)
    for name, media_type in (("cover.png", "image/png"), ("clip.mp4", "video/mp4")):
        found = read_c2pa(files / name, media_type)
        assert found is not None, name
        assert found["validation_state"] == "Valid"  # signature and hashes check out
        manifest = found["manifest"]
        actions = next(a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))
        created = actions["data"]["actions"][0]
        assert created["action"] == "c2pa.created"
        assert created["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
        assert manifest["signature_info"]["common_name"] == "Test signer"
        custom = next(
            a for a in manifest["assertions"] if a["label"] == "org.llmpopcorn.disclosure"
        )
        assert custom["data"]["text"] == meta["disclosure"]
    # the plain-text disclosures survive signing
    with Image.open(files / "cover.png") as cover:
        assert cover.text["AI-Disclosure"] == meta["disclosure"]
    with av.open(str(files / "clip.mp4")) as container:
        assert container.metadata["comment"] == meta["disclosure"]


def test_a_certificate_c2pa_rejects_is_reported_with_a_hint(run, tmp_path):
    cert, key = make_test_cert(tmp_path, bare=True)
    with pytest.raises(ConfigError, match="could not be signed") as info:
        make_package(run.run_dir, signer=C2PASigner.from_files(cert, key))
    assert "--c2pa-cert" in info.value.hint


def test_signer_settings_need_both_files(tmp_path):
    cert, key = make_test_cert(tmp_path)
    assert signer_from_settings(Settings()) is None
    with pytest.raises(ConfigError, match="both"):
        signer_from_settings(Settings(c2pa_cert=cert))
    with pytest.raises(ConfigError, match="not found"):
        signer_from_settings(Settings(c2pa_cert=cert, c2pa_key=tmp_path / "missing.key"))
    assert signer_from_settings(Settings(c2pa_cert=cert, c2pa_key=key)) is not None


def _record(idea: Idea, category: str = "Delicacy") -> RunRecord:
    return RunRecord(
        run_id="r",
        query="a street food vendor flips a giant omelette",
        mode="pe",
        seed=1,
        package_version="0",
        run_dir="/tmp/x",
        enhancement={"categories": [{"name": category, "similarity": 0.4}]},
        idea=idea,
    )


def test_hashtags_are_the_ideas_own_then_the_disclosure():
    idea = Idea(
        title="Omelette Flip Master",
        cover_prompt="c",
        video_prompt="v",
        hashtags=["#StreetFood", "omelette", "#Bangkok", "#Foodie", "#Chef", "#Wok"],
    )
    tags = hashtags_for(_record(idea))
    assert tags == ["#StreetFood", "#omelette", "#Bangkok", "#Foodie", "#Chef", "#AIGenerated"]


def test_an_idea_without_hashtags_gets_its_category_not_its_title():
    """An older record or an LLM that gave none: topped up with the category's name (no
    MicroLens tags ship with the package), never the title's words."""
    idea = Idea(title="Omelette Flip Master", cover_prompt="c", video_prompt="v")
    tags = hashtags_for(_record(idea))
    assert tags == ["#Delicacy", "#AIGenerated"]
    assert not {"#Omelette", "#Flip", "#Master"} & set(tags)
    assert hashtags_for(_record(idea, "Fiction"))[:-1] == ["#Fiction"]


def test_a_run_without_a_clip_cannot_be_packaged(tmp_path):
    settings = Settings(out_dir=tmp_path / "runs", score=False, render=False)
    record = draft_pipeline(settings).make("a corgi learns to surf")
    with pytest.raises(DataError, match="no finished cover and clip"):
        make_package(record.run_dir)


def test_cli_make_package_signed(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from llmpopcorn.cli import main

    cert, key = make_test_cert(tmp_path)
    monkeypatch.setenv("POPCORN_C2PA_CERT", str(cert))
    monkeypatch.setenv("POPCORN_C2PA_KEY", str(key))
    out = tmp_path / "runs"
    args = ["make", "a corgi learns to surf", "--package", "--no-score", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (zip_path,) = out.glob("*/package.zip")
    meta = json.loads(zipfile.ZipFile(zip_path).read("metadata.json"))
    assert meta["c2pa"]["signed"] is True
    assert "package" in result.output  # listed with the artifacts


def test_cli_make_package_with_a_bad_key_fails_before_generating(tmp_path):
    from click.testing import CliRunner

    from llmpopcorn.cli import main

    cert, _ = make_test_cert(tmp_path)
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    out = tmp_path / "runs"
    args = ["make", "q", "--package", "--no-score", "--out", str(out)]
    args += ["--c2pa-cert", str(cert), "--c2pa-key", str(bad)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "error:" in result.output and "POPCORN_C2PA_KEY" in result.output
    assert not out.exists() or not list(out.iterdir())


def test_without_c2pa_python_signing_names_the_extra(run, tmp_path, monkeypatch):
    import sys

    from llmpopcorn.core.errors import MissingExtraError

    cert, key = make_test_cert(tmp_path)
    monkeypatch.setitem(sys.modules, "c2pa", None)  # as if c2pa-python were not installed
    with pytest.raises(MissingExtraError, match="c2pa-python") as info:
        make_package(run.run_dir, signer=C2PASigner.from_files(cert, key))
    assert "llmpopcorn[hosted]" in info.value.hint
    make_package(run.run_dir)  # an unsigned package needs no c2pa-python
