# Least-privilege roles: each names the prefixes it touches and nothing else.

# The publisher (the publish DAG's tasks): objects under recs/ and _staging/, listing the
# bucket (without it S3 answers 403 instead of 404 for a missing key, which the publisher
# reads as an error: the first publish's latest.json, erasure's probes), and invalidations
# of this distribution.
data "aws_iam_policy_document" "assume_publisher" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = var.publisher_principal_arns
    }
  }
}

resource "aws_iam_role" "publisher" {
  name               = "${var.bucket_name}-publisher"
  assume_role_policy = data.aws_iam_policy_document.assume_publisher.json
}

data "aws_iam_policy_document" "publisher" {
  statement {
    sid     = "Objects"
    actions = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = [
      "${aws_s3_bucket.recs.arn}/${local.recs_path}",
      "${aws_s3_bucket.recs.arn}/${local.staging_path}",
    ]
  }
  statement {
    sid       = "List"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
    resources = [aws_s3_bucket.recs.arn]
  }
  statement {
    sid       = "InvalidateLatest"
    actions   = ["cloudfront:CreateInvalidation", "cloudfront:GetInvalidation"]
    resources = [aws_cloudfront_distribution.recs.arn]
  }
}

resource "aws_iam_role_policy" "publisher" {
  name   = "publish-recs"
  role   = aws_iam_role.publisher.id
  policy = data.aws_iam_policy_document.publisher.json
}

# Spark (ingest, training, scoring; when the lake is on S3, RECFLOW_LAKE_DIR=s3a://...):
# the lake and the landing folder, read and write, with what S3A and Delta's commits need
# (listing the bucket, so probes of absent files get 404; multipart uploads); no access
# to the published bucket.
data "aws_iam_policy_document" "assume_spark" {
  count = local.with_lake ? 1 : 0
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = var.spark_principal_arns
    }
  }
}

resource "aws_iam_role" "spark" {
  count              = local.with_lake ? 1 : 0
  name               = "${var.lake_bucket_name}-spark"
  assume_role_policy = data.aws_iam_policy_document.assume_spark[0].json
}

data "aws_iam_policy_document" "spark" {
  count = local.with_lake ? 1 : 0
  statement {
    sid     = "LakeObjects"
    actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = [
      "${local.lake_arn}/${var.lake_prefix}*",
      "${local.lake_arn}/${var.landing_prefix}*",
      "${local.lake_arn}/${trimsuffix(var.lake_prefix, "/")}",
      "${local.lake_arn}/${trimsuffix(var.landing_prefix, "/")}",
    ]
  }
  statement {
    sid       = "LakeList"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
    resources = [local.lake_arn]
  }
}

resource "aws_iam_role_policy" "spark" {
  count  = local.with_lake ? 1 : 0
  name   = "lake-read-write"
  role   = aws_iam_role.spark[0].id
  policy = data.aws_iam_policy_document.spark[0].json
}

# The online service needs no AWS role: its model is baked into its image, its features
# come from the online store (Redis), and its answer and access logs are files the
# ingest's landing path ships. Least privilege is none.
