"""citebot's interfaces: the command line, the terminal chat and the Discord bot."""
