"""Smoke test: a real local Spark job (word count) through the JVM."""

from pyspark.sql import SparkSession

spark = (
    SparkSession.builder.master("local[2]")
    .appName("heps-smoke")
    .config("spark.ui.enabled", "false")
    .getOrCreate()
)
lines = spark.sparkContext.parallelize(["beam line", "photon beam", "line scan"])
words = lines.flatMap(str.split)
counts = dict(words.map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b).collect())
spark.stop()
assert counts == {"beam": 2, "line": 2, "photon": 1, "scan": 1}, counts
print(f"words={sum(counts.values())} distinct={len(counts)} OK")
