from dlbox.launch import main

main()
