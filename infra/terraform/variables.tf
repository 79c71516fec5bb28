variable "region" {
  type        = string
  description = "AWS region of the bucket (CloudFront itself is global)."
  default     = "us-east-1"
}

variable "bucket_name" {
  type        = string
  description = "Bucket holding the published recommendations (RECFLOW_PUBLISH_BUCKET)."
  validation {
    # 64 characters is the limit of IAM role and OAC names, which append "-publisher".
    condition     = length(var.bucket_name) <= 54
    error_message = "bucket_name: at most 54 characters (role names add a suffix)."
  }
}

variable "publish_prefix" {
  type        = string
  description = "Key prefix of the publishes inside the bucket (RECFLOW_PUBLISH_PREFIX), empty or ending in /."
  default     = ""
  validation {
    condition     = var.publish_prefix == "" || endswith(var.publish_prefix, "/")
    error_message = "publish_prefix: empty or ending in /."
  }
}

variable "cors_origins" {
  type        = list(string)
  description = "Origins allowed to fetch recommendation JSON from browsers."
  default     = ["*"]
}

variable "price_class" {
  type        = string
  description = "CloudFront price class (edge locations used)."
  default     = "PriceClass_100"
}

variable "publisher_principal_arns" {
  type        = list(string)
  description = "Principals (e.g. the Airflow worker's role) allowed to assume the publisher role."
}



variable "latest_cache_seconds" {
  type        = number
  description = "Longest CloudFront keeps recs/latest.json and the slots' objects (RECFLOW_PUBLISH_CACHE_SECONDS)."
  default     = 60
}


variable "lake_bucket_name" {
  type        = string
  description = "Bucket of the lake and the landing folder when they are on S3 (RECFLOW_LAKE_DIR=s3a://...); empty creates no Spark role."
  default     = ""
}

variable "lake_prefix" {
  type        = string
  description = "Key prefix of the Delta lake inside lake_bucket_name, ending in /."
  default     = "lake/"
}

variable "landing_prefix" {
  type        = string
  description = "Key prefix of the landing folder (events, answer logs) inside lake_bucket_name, ending in /."
  default     = "landing/"
}

variable "spark_principal_arns" {
  type        = list(string)
  description = "Principals (Spark driver and executors, e.g. their instance or pod roles) allowed to assume the Spark role."
  default     = []
}

