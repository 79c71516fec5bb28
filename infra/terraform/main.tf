# The published recommendations: a private bucket that only CloudFront reads (origin
# access control), a distribution that honours the objects' own Cache-Control (immutable
# for recs/v/..., 60 s for recs/latest.json), and the role recflow's publisher runs as.

locals {
  recs_path = "${var.publish_prefix}recs/*"
  # Scores between the publish DAG's tasks: the publisher's only, never behind CloudFront.
  staging_path = "${var.publish_prefix}_staging/*"
}

resource "aws_s3_bucket" "recs" {
  bucket = var.bucket_name
}

resource "aws_s3_bucket_public_access_block" "recs" {
  bucket                  = aws_s3_bucket.recs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "recs" {
  bucket = aws_s3_bucket.recs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# SSE-S3 keeps the ETag equal to the body's MD5, which the publisher's verify step uses
# (SSE-KMS would not).
resource "aws_s3_bucket_server_side_encryption_configuration" "recs" {
  bucket = aws_s3_bucket.recs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "recs" {
  bucket = aws_s3_bucket.recs.id
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
  rule {
    id     = "expire-noncurrent"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_days
    }
  }
}

resource "aws_s3_bucket_cors_configuration" "recs" {
  bucket = aws_s3_bucket.recs.id
  cors_rule {
    allowed_methods = ["GET", "HEAD"]
    allowed_origins = var.cors_origins
    allowed_headers = ["*"]
    expose_headers  = ["ETag"]
    max_age_seconds = 86400
  }
}

resource "aws_cloudfront_origin_access_control" "recs" {
  name                              = "${var.bucket_name}-oac"
  origin_access_control_origin_type = "s3"
  signing_behavior                  = "always"
  signing_protocol                  = "sigv4"
}

data "aws_cloudfront_cache_policy" "optimized" {
  name = "Managed-CachingOptimized" # honours origin Cache-Control; gzip-aware
}

data "aws_cloudfront_origin_request_policy" "cors" {
  name = "Managed-CORS-S3Origin"
}

data "aws_cloudfront_response_headers_policy" "cors" {
  name = "Managed-SimpleCORS"
}

resource "aws_cloudfront_distribution" "recs" {
  enabled         = true
  comment         = "recflow published recommendations"
  price_class     = var.price_class
  is_ipv6_enabled = true

  origin {
    origin_id                = "recs"
    domain_name              = aws_s3_bucket.recs.bucket_regional_domain_name
    origin_access_control_id = aws_cloudfront_origin_access_control.recs.id
  }

  default_cache_behavior {
    target_origin_id           = "recs"
    viewer_protocol_policy     = "redirect-to-https"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    compress                   = false # objects are stored gzip-encoded already
    cache_policy_id            = data.aws_cloudfront_cache_policy.optimized.id
    origin_request_policy_id   = data.aws_cloudfront_origin_request_policy.cors.id
    response_headers_policy_id = data.aws_cloudfront_response_headers_policy.cors.id
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    cloudfront_default_certificate = true
  }
}

# Only this distribution may read the bucket.
data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "CloudFrontReadsRecs"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.recs.arn}/${local.recs_path}"]
    principals {
      type        = "Service"
      identifiers = ["cloudfront.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "AWS:SourceArn"
      values   = [aws_cloudfront_distribution.recs.arn]
    }
  }
}

resource "aws_s3_bucket_policy" "recs" {
  bucket     = aws_s3_bucket.recs.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.recs]
}

# The publisher: put/list/delete under the publish prefix, invalidate latest.json.
data "aws_iam_policy_document" "assume" {
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
  assume_role_policy = data.aws_iam_policy_document.assume.json
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
