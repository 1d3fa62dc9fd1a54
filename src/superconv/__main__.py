from superconv.cli import main

main()
