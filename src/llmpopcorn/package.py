"""The ready-to-post package: one zip a creator can upload, that says it is AI-generated.

``make_package(run_dir)`` writes ``package.zip`` into a finished run's folder with

- ``clip.mp4``: the clip, remuxed (no re-encode) with the disclosure in its MP4
  metadata (``comment``; title and caption in ``title`` / ``description``);
- ``cover.png``: the cover with the disclosure in PNG text chunks (``AI-Disclosure``,
  ``DigitalSourceType``, ``Software``, ``Title``, ``Description``);
- ``metadata.json``: title, a caption and hashtags derived from the idea and PE's
  category (when there is one), the disclosure text, and every provider and model
  that made the content.

When a signing certificate and key are configured (``--c2pa-cert`` / ``--c2pa-key``,
``POPCORN_C2PA_CERT`` / ``POPCORN_C2PA_KEY``), both media files also carry a signed C2PA
manifest (c2pa-python) whose ``c2pa.created`` action declares the IPTC digital source
type *trainedAlgorithmicMedia*, i.e. generative AI. Without them the package is still
written, its metadata says it is unsigned and why.

The web studio can call :func:`make_package` the same way the CLI does.
"""

from __future__ import annotations

import json
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import ConfigError, DataError, MissingExtraError
from .report import load_record, save_record
from .types import Artifact, RunRecord

if TYPE_CHECKING:  # pragma: no cover
    from .settings import Settings

PACKAGE_NAME = "package.zip"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
DISCLOSURE = (
    "AI-generated content: the title, cover image and video of this post were created "
    "with generative AI (LLMPopcorn). Models used: {models}."
)
MAX_HASHTAGS = 6
_STOP = frozenset(
    "a an and are as at be by for from has have how in into is it its of on or that the "
    "their this to was when where which while who why will with you your our we my".split()
)


# -- signing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class C2PASigner:
    """A PEM certificate chain (end-entity first) and its private key."""

    cert_chain: bytes
    private_key: bytes
    source: str = ""  # where they came from (paths; never the key itself)

    @classmethod
    def from_files(cls, cert: str | Path, key: str | Path) -> C2PASigner:
        paths = {
            "--c2pa-cert / POPCORN_C2PA_CERT": Path(cert),
            "--c2pa-key / POPCORN_C2PA_KEY": Path(key),
        }
        for setting, path in paths.items():
            if not path.expanduser().is_file():
                raise ConfigError(f"C2PA file not found: {path}", f"point {setting} at a PEM file")
        return cls(
            Path(cert).expanduser().read_bytes(),
            Path(key).expanduser().read_bytes(),
            source=str(cert),
        )

    def algorithm(self) -> str:
        """The C2PA signing algorithm that fits the key (es256, es384, es512, ps256, ed25519)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        try:
            key = serialization.load_pem_private_key(self.private_key, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"the C2PA private key cannot be read: {exc}",
                "set --c2pa-key / POPCORN_C2PA_KEY to an unencrypted PEM private key",
            ) from None
        if isinstance(key, ec.EllipticCurvePrivateKey):
            by_curve = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
            if key.curve.name in by_curve:
                return by_curve[key.curve.name]
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            return "ed25519"
        elif isinstance(key, rsa.RSAPrivateKey):
            return "ps256"
        raise ConfigError(
            "the C2PA private key is of an unsupported type",
            "use an EC P-256/P-384/P-521, Ed25519 or RSA key",
        )


def signer_from_settings(settings: Settings) -> C2PASigner | None:
    """The configured signer, or None when no certificate is configured."""
    cert, key = settings.c2pa_cert, settings.c2pa_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError(
            "a C2PA signature needs both a certificate chain and its private key",
            "set both --c2pa-cert / POPCORN_C2PA_CERT and --c2pa-key / POPCORN_C2PA_KEY",
        )
    return C2PASigner.from_files(cert, key)


def _c2pa():
    try:
        import c2pa
    except ImportError:
        raise MissingExtraError("c2pa-python", "hosted", "signed C2PA manifests") from None
    return c2pa


# -- what the package says ----------------------------------------------------------------


def models_used(record: RunRecord) -> list[dict[str, Any]]:
    """Every backend that made part of the content: stage, backend, provider, model and
    (hosted) the provider's request id."""
    used = []
    for stage in ("llm", "image", "video"):
        use = record.backends.get(stage)
        if use is None:
            continue
        last = use.options.get("last_call") or {}
        entry = {
            "stage": {"llm": "idea", "image": "cover", "video": "clip"}[stage],
            "backend": use.name,
            "model": use.model,
            "provider": use.options.get("provider") or _provider_of(use.name, use.options),
        }
        artifact = record.artifact({"image": "cover", "video": "clip"}.get(stage, ""))
        request_id = last.get("request_id") or (
            artifact.meta.get("request_id") if artifact else None
        )
        if artifact is not None and artifact.meta.get("model"):
            entry["model"] = artifact.meta["model"]
        if request_id:
            entry["request_id"] = request_id
        if stage == "llm" and use.is_llm is False:
            entry["note"] = "no language model: fixed templates"
        used.append(entry)
    return used


def _provider_of(name: str, options: dict[str, Any]) -> str:
    if name in ("draft", "offline", "fake"):
        return "local (no model)"
    if options.get("base_url"):
        return str(options["base_url"])
    return "local"


def category_of(record: RunRecord) -> str | None:
    """PE's chosen category, else the predictor's inferred one, else None."""
    enhancement = record.enhancement or {}
    for item in enhancement.get("categories") or []:
        name = item.get("name") if isinstance(item, dict) else item
        if name:
            return str(name)
    if record.score is not None and record.score.category:
        return record.score.category
    return None


def hashtags_for(record: RunRecord) -> list[str]:
    """Up to six hashtags: the category first, then the idea's and the query's key words."""
    tags: list[str] = []
    category = category_of(record)
    if category:
        tags.append(_tag(category))
    text = " ".join(filter(None, [record.idea.title if record.idea else "", record.query]))
    for word in re.findall(r"[A-Za-z][A-Za-z0-9']+", text):
        word = word.lower().strip("'")
        if len(word) < 3 or word in _STOP:
            continue
        tags.append(_tag(word))
    tags.append("#AIGenerated")
    seen, unique = set(), []
    for tag in tags:
        if tag and tag.lower() not in seen:
            seen.add(tag.lower())
            unique.append(tag)
    # keep the disclosure tag even when the list is cut
    head = [t for t in unique if t != "#AIGenerated"][: MAX_HASHTAGS - 1]
    return head + ["#AIGenerated"]


def _tag(text: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", text)
    return "#" + "".join(w[:1].upper() + w[1:] for w in words) if words else ""


def caption_for(record: RunRecord) -> str:
    """A short caption from the idea (its title and the first sentence of the clip)."""
    idea = record.idea
    assert idea is not None
    first = re.split(r"(?<=[.!?])\s", idea.video_prompt.strip(), maxsplit=1)[0]
    if len(first) > 180:
        first = first[:177].rsplit(" ", 1)[0] + "..."
    return f"{idea.title}: {first}" if first else idea.title


def disclosure_for(record: RunRecord) -> str:
    models = [f"{m['model'] or m['backend']} ({m['stage']})" for m in models_used(record)]
    return DISCLOSURE.format(models=", ".join(models) or "unknown")


def build_metadata(record: RunRecord) -> dict[str, Any]:
    if record.idea is None:
        raise DataError("the run has no idea to package", "package a finished run")
    caption = caption_for(record)
    tags = hashtags_for(record)
    return {
        "title": record.idea.title,
        "caption": caption,
        "hashtags": tags,
        "post_text": f"{caption}\n\n{' '.join(tags)}\n\n{disclosure_for(record)}",
        "ai_generated": True,
        "disclosure": disclosure_for(record),
        "digital_source_type": TRAINED_ALGORITHMIC_MEDIA,
        "category": category_of(record),
        "models": models_used(record),
        "query": record.query,
        "run_id": record.run_id,
        "created": record.created,
        "generator": f"llmpopcorn {__version__}",
    }


# -- embedding ------------------------------------------------------------------------------


def write_png_with_disclosure(src: Path, dest: Path, meta: dict[str, Any]) -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("AI-Disclosure", meta["disclosure"])
    info.add_itxt("DigitalSourceType", TRAINED_ALGORITHMIC_MEDIA)
    info.add_itxt("Title", meta["title"])
    info.add_itxt("Description", meta["caption"])
    info.add_itxt("Software", meta["generator"])
    with Image.open(src) as image:
        image.save(dest, format="PNG", pnginfo=info)


def write_mp4_with_disclosure(src: Path, dest: Path, meta: dict[str, Any]) -> None:
    """Copy the streams (no re-encode) into a new MP4 whose metadata carries the
    disclosure (``comment``), title and caption (``description``)."""
    import av

    with (
        av.open(str(src)) as inp,
        av.open(str(dest), mode="w", format="mp4", options={"movflags": "+faststart"}) as out,
    ):
        out.metadata.update(
            {
                "title": meta["title"],
                "comment": meta["disclosure"],
                "description": meta["caption"],
                "synopsis": meta["caption"],
                "encoder": meta["generator"],
            }
        )
        mapping = {}
        for stream in inp.streams:
            if stream.type in ("video", "audio"):
                mapping[stream.index] = out.add_stream_from_template(stream)
        for packet in inp.demux(*[inp.streams[i] for i in mapping]):
            if packet.dts is None:
                continue
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)


def c2pa_manifest(meta: dict[str, Any], title: str, stage: str) -> dict[str, Any]:
    agents = [m for m in meta["models"] if m["stage"] == stage] or meta["models"]
    agent = agents[0]["model"] or agents[0]["backend"] if agents else "unknown"
    return {
        "claim_generator_info": [{"name": "llmpopcorn", "version": __version__}],
        "title": title,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                            "softwareAgent": {"name": str(agent)},
                            "description": meta["disclosure"],
                        }
                    ]
                },
            },
            {
                "label": "org.llmpopcorn.disclosure",
                "data": {
                    "ai_generated": True,
                    "text": meta["disclosure"],
                    "models": meta["models"],
                },
            },
        ],
    }


def sign_c2pa(path: Path, media_type: str, manifest: dict[str, Any], signer: C2PASigner) -> None:
    """Embed a signed manifest in ``path`` (rewritten in place)."""
    c2pa = _c2pa()
    info = c2pa.C2paSignerInfo(signer.algorithm(), signer.cert_chain, signer.private_key, None)
    try:
        native = c2pa.Signer.from_info(info)
        builder = c2pa.Builder(manifest)
        signed = path.with_suffix(".signed" + path.suffix)
        with open(path, "rb") as src, open(signed, "w+b") as dest:
            builder.sign(native, media_type, src, dest)
    except c2pa.C2paError as exc:
        raise ConfigError(
            f"the C2PA manifest could not be signed: {exc}",
            "check --c2pa-cert / POPCORN_C2PA_CERT: a PEM chain, signing certificate first, "
            "with digitalSignature and emailProtection/documentSigning usages and subject/"
            "authority key identifiers; and that --c2pa-key is its private key",
        ) from None
    signed.replace(path)


def read_c2pa(path: Path, media_type: str) -> dict[str, Any] | None:
    """The active manifest and validation state of a file, or None when it has none."""
    c2pa = _c2pa()
    try:
        with open(path, "rb") as stream:
            reader = c2pa.Reader(media_type, stream)
            return {
                "manifest": reader.get_active_manifest(),
                "validation_state": reader.get_validation_state(),
            }
    except c2pa.C2paError:
        return None


# -- the package ---------------------------------------------------------------------------


def make_package(
    run_dir: str | Path,
    *,
    signer: C2PASigner | None = None,
    record: RunRecord | None = None,
) -> Path:
    """Write ``package.zip`` into ``run_dir`` (see the module docstring); return its path.
    The record lists it as an artifact."""
    run_dir = Path(run_dir)
    record = record or load_record(run_dir)
    cover, clip = record.artifact("cover"), record.artifact("clip")
    if record.status != "ok" or cover is None or clip is None or record.idea is None:
        raise DataError(
            f"run {record.run_id} has no finished cover and clip to package",
            "package a run that rendered both (not --no-render, not failed)",
        )
    meta = build_metadata(record)
    if signer is None:
        meta["c2pa"] = {
            "signed": False,
            "reason": "no signing certificate configured (set POPCORN_C2PA_CERT and "
            "POPCORN_C2PA_KEY, or --c2pa-cert and --c2pa-key)",
        }
    else:
        meta["c2pa"] = {
            "signed": True,
            "digital_source_type": TRAINED_ALGORITHMIC_MEDIA,
            "algorithm": signer.algorithm(),
        }
    target = run_dir / PACKAGE_NAME
    with tempfile.TemporaryDirectory(dir=run_dir, prefix=".package-") as tmp:
        tmp_dir = Path(tmp)
        png, mp4 = tmp_dir / "cover.png", tmp_dir / "clip.mp4"
        write_png_with_disclosure(run_dir / cover.path, png, meta)
        write_mp4_with_disclosure(run_dir / clip.path, mp4, meta)
        if signer is not None:
            sign_c2pa(png, "image/png", c2pa_manifest(meta, "cover.png", "cover"), signer)
            sign_c2pa(mp4, "video/mp4", c2pa_manifest(meta, "clip.mp4", "clip"), signer)
        (tmp_dir / "metadata.json").write_text(
            json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        partial = tmp_dir / PACKAGE_NAME
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name in ("clip.mp4", "cover.png", "metadata.json"):
                archive.write(tmp_dir / name, arcname=name)
        partial.replace(target)
    record.artifacts = [a for a in record.artifacts if a.path != PACKAGE_NAME]
    record.artifacts.append(
        Artifact(
            kind="other",
            path=PACKAGE_NAME,
            media_type="application/zip",
            bytes=target.stat().st_size,
            backend="package",
            meta={"signed_c2pa": signer is not None, "disclosure": meta["disclosure"]},
        )
    )
    save_record(record, run_dir)
    return target
