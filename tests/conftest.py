"""Session fixtures: a tiny tokenizer trained here and a tiny random Llama-style model. Nothing downloads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the threads stall waiting for each
# other (a 5 s pretraining run took 90 s); one thread per process keeps every test's time predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
DEMO_CONFIGS = PROJECT / "configs" / "demo"
DEMO_DATA = DEMO_CONFIGS / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-format test data not found at {SHARED_DATA} (the shared/ folder beside the project)")
    return SHARED_DATA


def _corpus() -> list[str]:
    texts = [line for line in (DEMO_DATA / "arithmetic_alpaca.jsonl").read_text().splitlines()]
    texts += [json.dumps(row) for row in json.loads((DEMO_DATA / "animals_sharegpt.json").read_text())]
    alpaca = SHARED_DATA / "alpaca_en_demo.json"
    if alpaca.is_file():
        texts += [" ".join(row.values()) for row in json.loads(alpaca.read_text())[:300]]
    else:  # without the shared data, the demo's own web-like pages fill the 800-token vocabulary just as well
        pages = (DEMO_DATA / "raw_corpus.jsonl").read_text().splitlines()[:300]
        texts += [json.loads(page)["text"] for page in pages]
    return texts


@pytest.fixture(scope="session")
def base_model_dir(tmp_path_factory) -> Path:
    """A tiny random decoder whose tokenizer has no chat template, like most base models."""
    import torch

    from llm_recipes.models.loading import init_decoder
    from llm_recipes.tokenizer.training import train_bpe_tokenizer

    folder = tmp_path_factory.mktemp("tiny-base")
    tokenizer = train_bpe_tokenizer(_corpus(), vocab_size=800)
    torch.manual_seed(0)
    model = init_decoder("llama-tiny", tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def chat_model_dir(tmp_path_factory) -> Path:
    """The same, but its tokenizer already has ChatML tokens and a template."""
    import torch

    from llm_recipes.models.loading import init_decoder
    from llm_recipes.tokenizer.training import train_bpe_tokenizer

    folder = tmp_path_factory.mktemp("tiny-chat")
    tokenizer = train_bpe_tokenizer(_corpus(), vocab_size=800, chat=True)
    torch.manual_seed(0)
    init_decoder("llama-tiny", tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def relocated_demo_pipeline(tmp_path: Path) -> dict:
    """The demo pipeline config with every outputs/demo path moved under tmp_path/out -- its evaluation protocol
    file's too (a copy in tmp_path), so a test's pipeline makes and reads only its own folders."""
    import yaml

    from llm_recipes.pipeline.plan import expand_stage_file

    out = str(tmp_path / "out")
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text((DEMO_CONFIGS / "protocol.yaml").read_text(encoding="utf-8").replace("outputs/demo", out))
    # the sections name the demo's stage files: read them in first, so their paths move too
    demo = yaml.safe_load((DEMO_CONFIGS / "pipeline.yaml").read_text(encoding="utf-8"))
    expanded = {
        name: section if name == "pipeline" else expand_stage_file(name, section or {})
        for name, section in demo.items()
    }
    text = yaml.safe_dump(expanded, sort_keys=False).replace("outputs/demo", out)
    return yaml.safe_load(text.replace("configs/demo/protocol.yaml", str(protocol)))


def write_yaml(path: Path, config: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# The feedback store's PostgreSQL tests: a real server. .ci/run starts one (tests/postgres_cluster.py) and exports
# its URL here; elsewhere the tests start their own when PostgreSQL is installed, and skip when it is not (in CI,
# a missing server fails them instead: a skipped store test there would hide a broken install step).
POSTGRES_URL_ENV = "LLM_RECIPES_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a running PostgreSQL server's `postgres` database (superuser, no password)."""
    import tempfile

    from postgres_cluster import find_binaries, start, stop

    if os.environ.get(POSTGRES_URL_ENV):
        yield os.environ[POSTGRES_URL_ENV]
        return
    if find_binaries() is None:
        reason = f"PostgreSQL is not installed (apt-get install postgresql) and {POSTGRES_URL_ENV} is not set"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    folder = tempfile.mkdtemp(prefix="llm_recipes_pg_")  # in /tmp: the cluster's user must reach it
    try:
        yield start(folder)
    finally:
        stop(folder)


def new_postgres_database(server: str) -> str:
    """The URL of a new, empty database on the PostgreSQL server at `server`."""
    import uuid

    from sqlalchemy import create_engine

    from llm_recipes.serving.store import database_url

    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(database_url(server), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return database_url(server).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def postgres_store_url(postgres_server) -> str:
    return new_postgres_database(postgres_server)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """A fresh, empty feedback store database: a SQLite file, or a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.db'}"
    return new_postgres_database(request.getfixturevalue("postgres_server"))
