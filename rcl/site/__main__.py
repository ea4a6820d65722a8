from rcl.site.build import main

main()
