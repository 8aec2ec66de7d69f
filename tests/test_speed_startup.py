"""Start-up stays light (issue 14): `popcorn --help` loads no array, image, video or
inference library. benchmarks/bench_speed.py times it; this guards what it imports."""

import json
import subprocess
import sys

#: each costs 0.1-2 s of start-up on 2 cores and is needed only once a command runs
NOT_AT_START = (
    "numpy",
    "PIL",
    "av",
    "onnxruntime",
    "tokenizers",
    "faiss",
    "pandas",
    "sklearn",
    "scipy",
    "torch",
    "huggingface_hub",
)


def test_the_cli_starts_without_array_image_or_inference_libraries():
    code = (
        "import sys, json\n"
        "from llmpopcorn.cli import main\n"
        "try:\n"
        "    main(['--help'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps([m for m in {NOT_AT_START!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_onnx_embedder_module_imports_nothing_heavy():
    code = (
        "import sys, json\n"
        "import llmpopcorn.backends.embed.onnxrt, llmpopcorn.backends.embed.sentence\n"
        "import llmpopcorn.backends.media, llmpopcorn.predict.embed\n"
        "print(json.dumps([m for m in ('torch', 'onnxruntime', 'tokenizers', 'av', 'PIL',"
        " 'transformers', 'sentence_transformers') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
