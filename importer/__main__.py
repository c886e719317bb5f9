from importer._launch import main

main()
