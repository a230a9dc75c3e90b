# Thin aliases for the README's commands; ./dev works without make.
.PHONY: demo test setup bench install uninstall
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
RUNTIME ?= litert

demo:
	./dev demo
test:
	./dev test
setup:
	./dev setup
bench:
	./dev bench
install:        # make install [RUNTIME=tflite]
	$(SUDO) env EDGE_AGENT_RUNTIME=$(RUNTIME) scripts/install.sh
uninstall:
	$(SUDO) scripts/uninstall.sh
