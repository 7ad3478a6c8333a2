"""Where digits/fetch.py gets data from: one module per kind of source (mirror, wheel, local, kaggle).

Each source returns arrays by IDX file name; fetch checks, hashes and writes them.
"""
