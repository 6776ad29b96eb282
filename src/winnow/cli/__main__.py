from winnow.cli.app import main

main()
