# Thin aliases for the README's commands; ./dev works without make.
.PHONY: demo test setup
demo:
	./dev demo
test:
	./dev test
setup:
	./dev setup
