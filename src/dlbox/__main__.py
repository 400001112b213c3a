from dlbox.cli import main

main()
