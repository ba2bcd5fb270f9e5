from .cli import laion

if __name__ == "__main__":  # guarded: the build's worker process imports this
    laion(prog_name="python -m datasette_laion")
