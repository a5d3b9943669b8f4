# The stack tests/terraform.rs applies, updates and destroys against a Lambda@Home User API with
# the hashicorp/aws provider (5.x). Every input comes from a variable: the endpoint is the test
# server's ephemeral port, the zips are built by the test in its temporary working directory.
#
# Phase 1 (greeting = "hello", code v1) creates version 1 and points the alias at it; phase 2
# (greeting = "bonjour", code v2) publishes version 2 and moves the alias. The invocation data
# source is qualified with the version just published, so it is read after the function update.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 6.0"
    }
  }
}

variable "endpoint" {
  description = "Base URL of the Lambda@Home User API, e.g. http://127.0.0.1:9000"
  type        = string
}

variable "function_name" {
  description = "Name of the function (unique per test run)"
  type        = string
}

variable "code_zip" {
  description = "Path of the function's deployment package (lambda_function.py at the root)"
  type        = string
}

variable "layer_zip" {
  description = "Path of the layer's package (python/greeting_layer.py)"
  type        = string
}

variable "greeting" {
  description = "Value of the GREETING environment variable"
  type        = string
}

provider "aws" {
  region     = "us-east-1"
  access_key = "test"
  secret_key = "test"

  # Offline: no STS GetCallerIdentity, no IAM/STS account lookup, no EC2 metadata probe, no check
  # that the region is one AWS knows. Only the Lambda endpoint below is ever contacted.
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true

  endpoints {
    lambda = var.endpoint
  }
}

resource "aws_lambda_layer_version" "greeting" {
  layer_name          = "${var.function_name}-layer"
  filename            = var.layer_zip
  source_code_hash    = filebase64sha256(var.layer_zip)
  compatible_runtimes = ["python3.12"]
  description         = "greeting_layer module"
}

resource "aws_lambda_function" "fn" {
  function_name    = var.function_name
  role             = "arn:aws:iam::000000000000:role/lambda"
  runtime          = "python3.12"
  handler          = "lambda_function.handler"
  filename         = var.code_zip
  source_code_hash = filebase64sha256(var.code_zip)
  publish          = true
  timeout          = 10
  memory_size      = 256
  layers           = [aws_lambda_layer_version.greeting.arn]

  environment {
    variables = {
      GREETING = var.greeting
    }
  }

  tags = {
    project = "lambda-at-home"
    suite   = "terraform"
  }
}

resource "aws_lambda_alias" "live" {
  name             = "live"
  description      = "the version Terraform published last"
  function_name    = aws_lambda_function.fn.function_name
  function_version = aws_lambda_function.fn.version
}

resource "aws_lambda_permission" "events" {
  statement_id  = "AllowEventBridge"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.fn.function_name
  principal     = "events.amazonaws.com"
  source_arn    = "arn:aws:events:us-east-1:000000000000:rule/lambda-at-home"
  qualifier     = aws_lambda_alias.live.name
}

resource "aws_lambda_function_event_invoke_config" "live" {
  function_name                = aws_lambda_function.fn.function_name
  qualifier                    = aws_lambda_alias.live.name
  maximum_retry_attempts       = 1
  maximum_event_age_in_seconds = 600
}

data "aws_lambda_invocation" "published" {
  function_name = aws_lambda_function.fn.function_name
  qualifier     = aws_lambda_function.fn.version
  input         = jsonencode({ source = "terraform" })
}

output "version" {
  value = aws_lambda_function.fn.version
}

output "qualified_arn" {
  value = aws_lambda_function.fn.qualified_arn
}

output "alias_version" {
  value = aws_lambda_alias.live.function_version
}

output "alias_arn" {
  value = aws_lambda_alias.live.arn
}

output "layer_version_arn" {
  value = aws_lambda_layer_version.greeting.arn
}

output "invocation_result" {
  value = data.aws_lambda_invocation.published.result
}
