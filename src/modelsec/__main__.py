from modelsec.cli.main import main

main()
