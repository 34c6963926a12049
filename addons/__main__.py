from teletap.cli import main

main()
