from imagematch.cli import main

main()
