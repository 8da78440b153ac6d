"""vidseg.evaluation"""
