# CloudFront in front of the bucket.

resource "aws_cloudfront_origin_access_control" "recs" {
  name                              = "${var.bucket_name}-oac"
  origin_access_control_origin_type = "s3"
  signing_behavior                  = "always"
  signing_protocol                  = "sigv4"
}

# Two cache policies, differing only in their lifetimes:
# - immutable: recs/v/<publish_id>/..., written once, never changed (Cache-Control:
#   immutable, a year); cached as long as the object says, at least a day;
# - changing: recs/latest.json, recs/404.json and recs/s/<slot>/..., rewritten by every
#   publish; never cached past the publisher's RECFLOW_PUBLISH_CACHE_SECONDS, so a flip
#   reaches every client within it even without the invalidation sent for latest.json.
locals {
  cache_ttls = {
    immutable = { min = 86400, default = 31536000, max = 31536000 }
    changing  = { min = 0, default = var.latest_cache_seconds, max = var.latest_cache_seconds }
  }
}

resource "aws_cloudfront_cache_policy" "recs" {
  for_each    = local.cache_ttls
  name        = "${var.bucket_name}-${each.key}"
  comment     = "recflow publishes: ${each.key} objects"
  min_ttl     = each.value.min
  default_ttl = each.value.default
  max_ttl     = each.value.max
  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_gzip   = true
    enable_accept_encoding_brotli = false
    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

data "aws_cloudfront_origin_request_policy" "cors" {
  name = "Managed-CORS-S3Origin"
}

# CORS for browsers on other origins, plus the security headers a JSON API should send.
resource "aws_cloudfront_response_headers_policy" "recs" {
  name    = "${var.bucket_name}-headers"
  comment = "recflow publishes: CORS and security headers"
  cors_config {
    access_control_allow_credentials = false
    access_control_max_age_sec       = 86400
    origin_override                  = true
    access_control_allow_headers {
      items = ["*"]
    }
    access_control_allow_methods {
      items = ["GET", "HEAD", "OPTIONS"]
    }
    access_control_allow_origins {
      items = var.cors_origins
    }
    access_control_expose_headers {
      items = ["ETag", "Content-Length"]
    }
  }
  security_headers_config {
    content_type_options {
      override = true
    }
    strict_transport_security {
      access_control_max_age_sec = 31536000
      include_subdomains         = true
      preload                    = true
      override                   = true
    }
    referrer_policy {
      referrer_policy = "no-referrer"
      override        = true
    }
  }
}

resource "aws_cloudfront_distribution" "recs" {
  #checkov:skip=CKV_AWS_68:A WAF in front of public, precomputed JSON adds cost and no protection the origin needs (no compute behind it, reads only); attach one with web_acl_id where policy demands.
  #checkov:skip=CKV2_AWS_47:Log4j rules belong to a WAF (see CKV_AWS_68); no Java serves these objects.
  #checkov:skip=CKV_AWS_310:One origin by design: a second bucket would have to hold the same publishes; a failed region republishes (lists are recomputed at every publish).
  #checkov:skip=CKV_AWS_86:Access logs would hold every user's HMAC key (in the request path) with their IP, outside erasure and retention; enable them only with a log bucket whose lifecycle is within the retention policy.
  #checkov:skip=CKV_AWS_174:The default *.cloudfront.net certificate cannot pin TLS 1.2; with a custom domain set acm_certificate_arn and minimum_protocol_version TLSv1.2_2021.
  #checkov:skip=CKV2_AWS_42:A custom certificate needs a domain this module does not own; set acm_certificate_arn with one (see CKV_AWS_174).
  #checkov:skip=CKV_AWS_374:Recommendations are served worldwide; restrict with geo_restriction where a market requires it.
  #checkov:skip=CKV_AWS_305:No root object: clients fetch recs/latest.json by name, and a GET of / gets the JSON 404.
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
    cache_policy_id            = aws_cloudfront_cache_policy.recs["immutable"].id
    origin_request_policy_id   = data.aws_cloudfront_origin_request_policy.cors.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.recs.id
  }

  # What every publish rewrites, and the 404 page: the short policy.
  dynamic "ordered_cache_behavior" {
    for_each = local.changing_paths
    content {
      path_pattern               = ordered_cache_behavior.value
      target_origin_id           = "recs"
      viewer_protocol_policy     = "redirect-to-https"
      allowed_methods            = ["GET", "HEAD", "OPTIONS"]
      cached_methods             = ["GET", "HEAD"]
      compress                   = false
      cache_policy_id            = aws_cloudfront_cache_policy.recs["changing"].id
      origin_request_policy_id   = data.aws_cloudfront_origin_request_policy.cors.id
      response_headers_policy_id = aws_cloudfront_response_headers_policy.recs.id
    }
  }

  # Without s3:ListBucket (which would let GET / list every user's key), S3 answers 403
  # for a key it does not hold. Clients (and S3Store.get) treat only 404 as "no personal
  # list": CloudFront answers both with the JSON 404 page, briefly cached. The page is
  # written by every publish's flip: on a bucket that has not been published to since
  # this was applied, missing keys still answer 403 until the next publish.
  custom_error_response {
    error_code            = 403
    response_code         = 404
    response_page_path    = local.not_found_page
    error_caching_min_ttl = 10
  }
  custom_error_response {
    error_code            = 404
    response_code         = 404
    response_page_path    = local.not_found_page
    error_caching_min_ttl = 10
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
