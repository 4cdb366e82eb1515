# The two commands the README names. VENV may point outside the clone (CI caches it there).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_INSTALL := $(PY) -m pip install -q -c .ci/constraints.txt

.PHONY: demo test install

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PIP_INSTALL) -e '.[test]'

demo: install
	$(VENV)/bin/scenerec demo

test: install
	$(PY) -m pytest -q
