# Two commands do everything on a fresh clone: `make demo` and `make test`.
# The virtual environment is built once and reused while pyproject.toml is unchanged.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE := worker_yolo_training/sample
DEMO_OUTPUT ?= demo-output

.PHONY: demo demo-classify test lint sample manifests production-demo docker-check gpu-wheels gpu-bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/worker-yolo-training --dev \
		--database $(SAMPLE)/export.sqlite \
		--config $(SAMPLE)/config.yml \
		--images $(SAMPLE)/images \
		--output $(DEMO_OUTPUT)

# The classify mode on the same sample (its pages' classifications)
demo-classify: $(BIN)/.installed
	$(BIN)/worker-yolo-training --dev \
		--database $(SAMPLE)/export.sqlite \
		--config $(SAMPLE)/config-classify.yml \
		--images $(SAMPLE)/images \
		--output $(DEMO_OUTPUT)-classify

test: $(BIN)/.installed
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

production-demo: $(BIN)/.installed
	$(BIN)/python scripts/fake_production_run.py

# The Docker image built and run offline on the sample, segment and classify modes (docs/docker.md;
# needs root, installs docker.io and starts dockerd if needed; not in .ci/run: ~10 GB, minutes)
docker-check:
	scripts/docker_check.sh

sample: $(BIN)/.installed
	$(BIN)/python scripts/make_sample.py

# Both manifests and the option table of docs/configuration.md, from worker_yolo_training/config/options.py
manifests: $(BIN)/.installed
	$(BIN)/python -m worker_yolo_training.config.manifests

# GPU benchmark (benchmarks/README.md): the wheels to carry to a GPU machine, and the benchmark
# itself, run there with that machine's Python (no venv)
gpu-wheels:
	scripts/gpu_wheels.sh

gpu-bench:
	$(PYTHON) benchmarks/gpu.py

clean:
	rm -rf $(DEMO_OUTPUT) $(DEMO_OUTPUT)-classify docker-check-output .pytest_cache
