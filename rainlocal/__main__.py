from rainlocal.cli.main import main

main()
