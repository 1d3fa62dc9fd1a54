from superconv.cli.main import main

main()
