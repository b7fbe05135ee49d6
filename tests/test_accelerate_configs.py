"""Static checks of the `accelerate launch` configs in configs/accelerate/.

Nothing here starts a process: every check goes through accelerate's own loader
(`load_config_from_file` -> `ClusterConfig`) and its launch-argument resolution, which is
exactly what `accelerate launch --config_file <file>` runs before it spawns anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin, patch_environment
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
ALL_CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))

# file name -> (distributed_type, num_processes, num_machines, mixed_precision)
EXPECTED = {
    # MULTI_GPU on purpose: accelerate 1.15 starts a single process for MULTI_CPU unless mpirun is used;
    # MULTI_GPU goes through torchrun and ACCELERATE_USE_CPU=true turns the workers into MULTI_CPU/gloo.
    "cpu.yaml": (DistributedType.MULTI_GPU, 2, 1, "no"),
    "single_gpu.yaml": (DistributedType.NO, 1, 1, "bf16"),
    "ddp.yaml": (DistributedType.MULTI_GPU, 8, 1, "bf16"),
    "fsdp.yaml": (DistributedType.FSDP, 8, 1, "bf16"),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 8, 1, "bf16"),
    "deepspeed_zero3.yaml": (DistributedType.DEEPSPEED, 8, 1, "bf16"),
    "multi_node.yaml": (DistributedType.MULTI_GPU, 16, 2, "bf16"),
}


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _launch_dests() -> set[str]:
    return {action.dest for action in launch_command_parser()._actions}


def _resolve(name: str, *cli: str) -> tuple[argparse.Namespace, ClusterConfig]:
    """What `accelerate launch --config_file <name> [cli...] train.py` resolves to, without launching."""
    argv = ["--config_file", str(CONFIG_DIR / name), *cli, "train.py"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    return args, defaults


def test_expected_files_exist():
    missing = sorted(set(EXPECTED) - {p.name for p in ALL_CONFIGS})
    assert not missing, f"missing accelerate configs: {missing}"


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_ids(ALL_CONFIGS))
def test_starts_with_documentation_comment(path: Path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), f"{path.name} must start with a comment block"
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for section in ("WHEN TO USE", "WHAT TO CHANGE", "MEMORY NOTES"):
        assert section in header, f"{path.name}: header comment lacks a {section!r} section"


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_ids(ALL_CONFIGS))
def test_loads_with_accelerate_loader(path: Path):
    # Raises on unknown top-level keys, a missing distributed_type or an invalid enum value.
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    # YAML 1.1 reads a bare `no` as False: mixed_precision must stay a string.
    assert isinstance(config.mixed_precision, str)
    assert config.mixed_precision in {"no", "fp16", "bf16", "fp8"}
    assert config.num_processes >= 1


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_ids(ALL_CONFIGS))
def test_nested_keys_are_launch_arguments(path: Path):
    # `accelerate launch` copies nested keys onto its argparse namespace (fsdp_config keys with an
    # `fsdp_` prefix) and silently keeps unknown ones, so check them against the parser.
    config = load_config_from_file(str(path))
    dests = _launch_dests()
    nested = {f"fsdp_{k}" if not k.startswith("fsdp") else k for k in config.fsdp_config}
    nested |= set(config.deepspeed_config)
    unknown = sorted(nested - dests)
    assert not unknown, f"{path.name}: keys not read by `accelerate launch`: {unknown}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_expected_values(name: str):
    distributed_type, num_processes, num_machines, mixed_precision = EXPECTED[name]
    config = load_config_from_file(str(CONFIG_DIR / name))
    assert config.distributed_type == distributed_type
    assert config.num_processes == num_processes
    assert config.num_machines == num_machines
    assert config.mixed_precision == mixed_precision
    assert config.use_cpu is (name == "cpu.yaml")


def test_cpu_config_resolves_to_two_torchrun_workers():
    args, config = _resolve("cpu.yaml")
    assert config.use_cpu is True
    assert args.use_cpu is True
    assert args.multi_gpu and not (args.use_fsdp or args.use_deepspeed)  # torchrun path
    prepare_multi_gpu_env(args)
    assert args.nproc_per_node == "2"
    assert args.mixed_precision == "no"
    assert args.main_process_port > 0  # 0 in the file -> a free port is picked


def test_single_gpu_config_pins_one_device():
    args, config = _resolve("single_gpu.yaml")
    assert config.gpu_ids == "0"
    assert not (args.multi_gpu or args.use_fsdp or args.use_deepspeed)
    assert args.num_processes == 1


def test_ddp_config_resolves_to_eight_processes():
    args, _ = _resolve("ddp.yaml")
    assert args.multi_gpu
    prepare_multi_gpu_env(args)
    assert args.nproc_per_node == "8"


def test_fsdp_config_builds_fsdp2_plugin():
    args, config = _resolve("fsdp.yaml")
    assert args.use_fsdp
    assert config.fsdp_config["fsdp_version"] == 2
    env = prepare_multi_gpu_env(args)
    assert env["FSDP_VERSION"] == "2"
    plugin_env = {k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_"))}
    with patch_environment(**plugin_env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True  # full shard
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    assert plugin.cpu_ram_efficient_loading is True
    assert plugin.activation_checkpointing is False


@pytest.mark.parametrize(
    ("name", "stage", "zero3_init", "save_16bit"),
    [("deepspeed_zero2.yaml", 2, False, False), ("deepspeed_zero3.yaml", 3, True, True)],
)
def test_deepspeed_configs_build_plugin(name: str, stage: int, zero3_init: bool, save_16bit: bool):
    # DeepSpeedPlugin only reads the environment; the deepspeed package itself is not needed here.
    args, config = _resolve(name)
    assert args.use_deepspeed
    assert config.deepspeed_config["offload_optimizer_device"] == "none"
    assert config.deepspeed_config["offload_param_device"] == "none"
    args.deepspeed_fields_from_accelerate_config = ",".join(config.deepspeed_config)
    _, env = prepare_deepspeed_cmd_env(args)
    assert args.nproc_per_node == "8"
    plugin_env = {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}
    with patch_environment(**plugin_env):
        plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == stage
    assert plugin.zero3_init_flag is zero3_init
    assert plugin.zero3_save_16bit_model is save_16bit
    assert plugin.deepspeed_config["zero_optimization"]["offload_optimizer"]["device"] == "none"
    # Left to the training arguments on purpose.
    assert plugin.gradient_accumulation_steps == "auto"


def test_multi_node_config_per_node_override():
    _, config = _resolve("multi_node.yaml")
    assert config.main_process_ip and config.main_process_port
    assert config.machine_rank == 0
    assert config.rdzv_backend == "static"
    # Node 1 uses the same file with --machine_rank 1 (rank != 0 also skips the local port check).
    args, _ = _resolve("multi_node.yaml", "--machine_rank", "1")
    assert args.machine_rank == 1
    prepare_multi_gpu_env(args)
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "8", 1)
    assert args.rdzv_backend == "static"
    assert args.rdzv_endpoint == f"{config.main_process_ip}:{config.main_process_port}"
