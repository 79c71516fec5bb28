# The published recommendations: a private, versioned bucket that only CloudFront reads
# (origin access control), a distribution with one cache policy for the immutable
# publishes and a short one for what changes between publishes (recs/latest.json and the
# slots' objects), a JSON 404 for missing keys, and least-privilege roles for the
# publisher, Spark and the online service. Files: s3.tf, cdn.tf, iam.tf.

locals {
  recs_path = "${var.publish_prefix}recs/*"
  # Scores between the publish DAG's tasks: the publisher's only, never behind CloudFront.
  staging_path = "${var.publish_prefix}_staging/*"
  # What CloudFront answers for a key the bucket does not hold (jobs.publish.layout
  # not_found_key; every publish's flip step writes it).
  not_found_page = "/${var.publish_prefix}recs/404.json"
  # Keys every publish rewrites (jobs.publish.layout latest_key, slot_root) and the page.
  changing_paths = [
    "/${var.publish_prefix}recs/latest.json",
    "/${var.publish_prefix}recs/s/*",
    local.not_found_page,
  ]
  lake_arn  = "arn:aws:s3:::${var.lake_bucket_name}"
  with_lake = var.lake_bucket_name != ""
}
