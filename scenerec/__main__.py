from .cli import main

if __name__ == "__main__":  # vLLM's worker processes import the main module again: run once
    main()
