"""A real 2-process CPU launch of the POPE command: merged records equal a one-process run's.

Why these launchers: ``accelerate launch --cpu --num_processes 2`` starts a single process in accelerate 1.x (its
simple launcher; multi-CPU there means MPI), so it cannot test sharding. ``accelerate launch --multi_gpu`` (which
goes through torchrun, also on a machine without GPUs) and ``torchrun`` start two processes; clva_lite then asks
accelerate for a CPU state (``PartialState(cpu=True)``), without which both would report rank 0 of 1.
"""

import json
import os
import subprocess
import sys

import pytest

from clva_lite.eval.items import question_items, run_items
from clva_lite.eval.methods import vanilla
from clva_lite.toy import pope_questions

LAUNCHERS = {
    "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517", "-m"],
    "torchrun": ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518", "-m"],
}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_two_cpu_processes_match_one_process(launcher, untrained, tmp_path):
    command = [sys.executable, *LAUNCHERS[launcher], "clva_lite", "pope", "--model", "toy-untrained", "--device",
               "cpu", "--method", "vanilla", "--split", "calibration", "--limit", "4", "--samplings", "adversarial",
               "--batch-size", "5", "--max-new-tokens", "2", "--out", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]

    records_dir = tmp_path / "records"
    shards = {p.name: [json.loads(line)["id"] for line in p.read_text().splitlines()]
              for p in records_dir.glob("*.rank*.jsonl")}
    assert sorted(shards) == ["pope-vanilla.rank0of2.jsonl", "pope-vanilla.rank1of2.jsonl"]
    items = question_items(pope_questions("calibration", 4, "adversarial"))
    ids = [i.item_id for i in items]
    assert shards["pope-vanilla.rank0of2.jsonl"] == ids[0::2]  # each process answered its own half
    assert shards["pope-vanilla.rank1of2.jsonl"] == ids[1::2]

    merged = [json.loads(line) for line in (records_dir / "pope-vanilla.jsonl").read_text().splitlines()]
    single = run_items(untrained, vanilla(), items, batch_size=5, max_new_tokens=2)
    assert merged == single
    assert result.stdout.count(f"| adversarial | {len(ids)} |") == 1  # only the main process reports
