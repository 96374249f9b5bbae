"""`python -m pipeline.train.recipe <run-dir>/spec.json`: the training child's entry point."""

from pipeline.train.recipe.run import main

if __name__ == "__main__":
    raise SystemExit(main())
