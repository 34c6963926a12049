from teletap.cli import main

# Guarded: the ingest worker process is spawned and re-imports the main module.
if __name__ == "__main__":
    main()
