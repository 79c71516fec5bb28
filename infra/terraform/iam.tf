# Least-privilege roles: each names the prefixes it touches and nothing else.

# The publisher (the publish DAG's tasks): objects under recs/ and _staging/, the listing
# of those prefixes only, and invalidations of this distribution.
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
    actions = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"]
    resources = [
      "${aws_s3_bucket.recs.arn}/${local.recs_path}",
      "${aws_s3_bucket.recs.arn}/${local.staging_path}",
    ]
  }
  statement {
    sid       = "List"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.recs.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [local.recs_path, local.staging_path]
    }
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
# the lake and the landing folder, read and write; no access to the published bucket.
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
    actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [
      "${local.lake_arn}/${var.lake_prefix}*",
      "${local.lake_arn}/${var.landing_prefix}*",
    ]
  }
  statement {
    sid       = "LakeList"
    actions   = ["s3:ListBucket"]
    resources = [local.lake_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.lake_prefix}*", "${var.landing_prefix}*"]
    }
  }
}

resource "aws_iam_role_policy" "spark" {
  count  = local.with_lake ? 1 : 0
  name   = "lake-read-write"
  role   = aws_iam_role.spark[0].id
  policy = data.aws_iam_policy_document.spark[0].json
}

# The online service: its model is baked into the image and its features come from the
# online store, so all it writes is its answer log, append-only, into the landing folder
# the ingest reads (no reads, no deletes, no listing).
data "aws_iam_policy_document" "assume_service" {
  count = local.with_lake ? 1 : 0
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = var.service_principal_arns
    }
  }
}

resource "aws_iam_role" "service" {
  count              = local.with_lake ? 1 : 0
  name               = "${var.lake_bucket_name}-service"
  assume_role_policy = data.aws_iam_policy_document.assume_service[0].json
}

data "aws_iam_policy_document" "service" {
  count = local.with_lake ? 1 : 0
  statement {
    sid       = "AnswerLog"
    actions   = ["s3:PutObject"]
    resources = ["${local.lake_arn}/${var.landing_prefix}answers/*"]
  }
}

resource "aws_iam_role_policy" "service" {
  count  = local.with_lake ? 1 : 0
  name   = "answer-log-append"
  role   = aws_iam_role.service[0].id
  policy = data.aws_iam_policy_document.service[0].json
}
