from halo_bench.cli import main

main()
